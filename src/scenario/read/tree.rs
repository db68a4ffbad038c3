//! The TOML document as the parser gives it (`toml::de::DeTable`), every value with its
//! place in the text: what the loader walks.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) type Span = Range<usize>;

/// A value of the document and where it is written.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    value: &'a Spanned<DeValue<'a>>,
}

/// A table of the document: its entries, and where it is written (a `[header]`, an inline
/// `{ ... }`, or the first key of dotted keys).
#[derive(Clone)]
pub(crate) struct Table<'a> {
    pub span: Span,
    entries: &'a DeTable<'a>,
}

/// One entry of a table: its key, where the key is written, and its value.
#[derive(Clone)]
pub(crate) struct Entry<'a> {
    pub key: &'a str,
    pub key_span: Span,
    pub value: Node<'a>,
}

impl<'a> Node<'a> {
    pub(crate) fn new(value: &'a Spanned<DeValue<'a>>) -> Self {
        Self { value }
    }

    pub(crate) fn span(&self) -> Span {
        self.value.span()
    }

    /// What the value is, for messages: "a string", "an integer", ...
    pub(crate) fn kind(&self) -> &'static str {
        match self.value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a number with a fraction",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date",
            DeValue::Array(_) => "a list",
            DeValue::Table(_) => "a table",
        }
    }

    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self.value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// An integer; `None` for anything else (and for integers beyond i64, which no key
    /// takes).
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self.value.get_ref() {
            DeValue::Integer(n) => {
                let digits = n.as_str().replace('_', "");
                Some(i64::from_str_radix(&digits, n.radix()).unwrap_or(i64::MAX))
            }
            _ => None,
        }
    }

    pub(crate) fn as_float(&self) -> Option<f64> {
        match self.value.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        self.value.get_ref().as_bool()
    }

    /// The items of a list.
    pub(crate) fn as_list(&self) -> Option<Vec<Node<'a>>> {
        match self.value.get_ref() {
            DeValue::Array(items) => Some(items.iter().map(Node::new).collect()),
            _ => None,
        }
    }

    pub(crate) fn as_table(&self) -> Option<Table<'a>> {
        match self.value.get_ref() {
            DeValue::Table(entries) => Some(Table {
                span: self.span(),
                entries,
            }),
            _ => None,
        }
    }
}

impl<'a> Table<'a> {
    pub(crate) fn root(table: &'a Spanned<DeTable<'a>>) -> Self {
        Self {
            span: 0..0,
            entries: table.get_ref(),
        }
    }

    pub(crate) fn span(&self) -> Span {
        self.span.clone()
    }

    /// Every entry, in the order written.
    pub(crate) fn entries(&self) -> Vec<Entry<'a>> {
        let mut entries: Vec<Entry<'a>> = self
            .entries
            .iter()
            .map(|(key, value)| Entry {
                key: key.get_ref().as_ref(),
                key_span: key.span(),
                value: Node::new(value),
            })
            .collect();
        entries.sort_by_key(|e| e.key_span.start);
        entries
    }

    /// The value of `key`, if written.
    pub(crate) fn get(&self, key: &str) -> Option<Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| Node::new(v))
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}
