//! A key of a table and how its value is read into the model: one row of the spec.
//!
//! A [`Table`] reads a TOML table into a model value that starts as its `Default` (so the
//! defaults live with the model's types): each key written is looked up among the rows,
//! read with its reader and put in place; unknown keys and missing required ones are
//! reported here, once for every table.

use std::fmt::Display;
use std::time::Duration;

use super::{TableId, unknown_key};
use crate::scenario::duration;
use crate::scenario::read::tree::{Node, Table as TomlTable};
use crate::scenario::read::{Cx, Key, values};

type Reader<T> = Box<dyn Fn(&mut Cx, &Node, &mut T, &str) -> bool + Send + Sync>;
type Shower = Box<dyn Fn() -> String + Send + Sync>;

/// One key of a table.
pub(crate) struct Field<T> {
    pub key: &'static str,
    /// A value as a file writes it, quotes included: `"5m"`.
    pub example: &'static str,
    /// What the value is, for the reference: "a duration".
    pub takes: &'static str,
    pub doc: &'static str,
    /// When the key must be written: what to say, and the hint, when it is not.
    pub required: Option<(&'static str, &'static str)>,
    /// Reads the value into the model; `None` for a key its table's loader reads itself
    /// (a list of tables, a reference to resolve).
    read: Option<Reader<T>>,
    /// The default value as a file writes it, for the reference.
    show: Option<Shower>,
}

impl<T: 'static> Field<T> {
    /// A key whose value `read` reads and `place` says where to put it; `show` writes a
    /// value as a file would, for the default in the reference.
    pub(crate) fn new<V: 'static>(
        key: &'static str,
        example: &'static str,
        takes: &'static str,
        read: impl Fn(&mut Cx, Key, &Node) -> Option<V> + Send + Sync + 'static,
        show: impl Fn(&V) -> String + Send + Sync + 'static,
        place: fn(&mut T) -> &mut V,
    ) -> Self
    where
        T: Default,
    {
        let name = Key { name: key, example };
        Field {
            key,
            example,
            takes,
            doc: "",
            required: None,
            read: Some(Box::new(move |cx, v, into, _path| {
                match read(cx, name, v) {
                    Some(value) => {
                        *place(into) = value;
                        true
                    }
                    None => false,
                }
            })),
            show: Some(Box::new(move || show(place(&mut T::default())))),
        }
    }

    /// A key that its table's loader reads itself.
    pub(crate) fn custom(key: &'static str, example: &'static str, takes: &'static str) -> Self {
        Field {
            key,
            example,
            takes,
            doc: "",
            required: None,
            read: None,
            show: None,
        }
    }

    pub(crate) fn doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }

    /// The key must be written; `message` and `hint` say so when it is not.
    pub(crate) fn required(mut self, message: &'static str, hint: &'static str) -> Self {
        self.required = Some((message, hint));
        self.show = None;
        self
    }

    /// The default of this key, as a file writes it; `None` for a required key or one
    /// its loader reads itself.
    pub(crate) fn default_shown(&self) -> Option<String> {
        self.show.as_ref().map(|show| show())
    }

    /// A key that holds a table of its own, read with that table's rows.
    pub(crate) fn table<V: Default + 'static>(
        key: &'static str,
        table: fn() -> &'static Table<V>,
        place: fn(&mut T) -> &mut V,
    ) -> Self {
        Field {
            key,
            example: "{ ... }",
            takes: "a table",
            doc: "",
            required: None,
            read: Some(Box::new(move |cx, v, into, path| {
                let table = table();
                let Some(node) = super::table_at(cx, table.id, v) else {
                    return false;
                };
                let path = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                table.read_into(cx, &node, &path, place(into))
            })),
            show: None,
        }
    }

    // ------------------------------------------------------------ one per kind of value

    pub(crate) fn flag(key: &'static str, place: fn(&mut T) -> &mut bool) -> Self
    where
        T: Default,
    {
        Self::new(
            key,
            "true",
            "true or false",
            values::boolean,
            bool::to_string,
            place,
        )
    }

    /// A whole number in `range`; `zero` says why 0 makes no sense when the range starts
    /// at 1.
    pub(crate) fn integer<V>(
        key: &'static str,
        example: &'static str,
        range: (i64, i64),
        zero: Option<&'static str>,
        place: fn(&mut T) -> &mut V,
    ) -> Self
    where
        T: Default,
        V: TryFrom<i64> + Display + 'static,
    {
        let read = move |cx: &mut Cx, key: Key, v: &Node| {
            let n = values::integer(cx, key, v, range, zero)?;
            V::try_from(n).ok()
        };
        Self::new(key, example, "a whole number", read, V::to_string, place)
    }

    /// A count that cannot be 0, for the reason given.
    pub(crate) fn count<V>(
        key: &'static str,
        example: &'static str,
        zero: &'static str,
        place: fn(&mut T) -> &mut V,
    ) -> Self
    where
        T: Default,
        V: TryFrom<i64> + Display + 'static,
    {
        Self::integer(key, example, (1, i64::MAX), Some(zero), place)
    }

    /// A duration; `zero` says why 0 is not allowed (`None`: it is).
    pub(crate) fn duration(
        key: &'static str,
        example: &'static str,
        zero: Option<&'static str>,
        place: fn(&mut T) -> &mut Duration,
    ) -> Self
    where
        T: Default,
    {
        let read = move |cx: &mut Cx, key: Key, v: &Node| values::duration(cx, key, v, zero);
        Self::new(
            key,
            example,
            "a duration",
            read,
            |d| duration::show(*d),
            place,
        )
    }

    /// A size in bytes; `zero` says why 0 is not allowed (`None`: it is).
    pub(crate) fn size(
        key: &'static str,
        example: &'static str,
        zero: Option<&'static str>,
        place: fn(&mut T) -> &mut u64,
    ) -> Self
    where
        T: Default,
    {
        let read = move |cx: &mut Cx, key: Key, v: &Node| values::size(cx, key, v, zero);
        let show = |n: &u64| {
            let (mib, kib) = (1024 * 1024, 1024);
            match *n {
                n if n > 0 && n % mib == 0 => format!("\"{}MiB\"", n / mib),
                n if n > 0 && n % kib == 0 => format!("\"{}KiB\"", n / kib),
                n => n.to_string(),
            }
        };
        Self::new(key, example, "a size", read, show, place)
    }

    /// One line of text.
    pub(crate) fn text(
        key: &'static str,
        example: &'static str,
        may_be_empty: bool,
        place: fn(&mut T) -> &mut String,
    ) -> Self
    where
        T: Default,
    {
        let read = move |cx: &mut Cx, key: Key, v: &Node| values::text(cx, key, v, may_be_empty);
        Self::new(key, example, "a string", read, |s| format!("{s:?}"), place)
    }

    /// One of a few names; `example` is the first, in quotes.
    pub(crate) fn choice<V: Copy + PartialEq + Send + Sync + 'static>(
        key: &'static str,
        example: &'static str,
        names: &'static [(&'static str, V)],
        aliases: &'static [(&'static str, &'static str)],
        explained: &'static str,
        place: fn(&mut T) -> &mut V,
    ) -> Self
    where
        T: Default,
    {
        let read = move |cx: &mut Cx, key: Key, v: &Node| {
            values::choice(cx, key.name, v, names, aliases, explained)
        };
        let show = move |value: &V| {
            let name = names
                .iter()
                .find(|(_, v)| v == value)
                .map_or("", |(n, _)| *n);
            format!("{name:?}")
        };
        Self::new(key, example, "a name", read, show, place)
    }
}

/// A table of the format and its keys.
pub(crate) struct Table<T> {
    pub id: TableId,
    pub doc: &'static str,
    pub fields: Vec<Field<T>>,
}

impl<T: 'static> Table<T> {
    pub(crate) fn new(id: TableId, doc: &'static str, fields: Vec<Field<T>>) -> Self {
        Self { id, doc, fields }
    }

    /// The keys, in the order the docs list them.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.key).collect()
    }

    /// Reads `table` (at `path`, like `host.0`) into `into`: each key written with its
    /// row's reader; the keys its loader reads itself are left to it. Reports unknown
    /// keys and missing required ones; returns false if anything was wrong.
    pub(crate) fn read_into(
        &self,
        cx: &mut Cx,
        table: &TomlTable,
        path: &str,
        into: &mut T,
    ) -> bool {
        let before = cx.problems();
        for entry in table.entries() {
            match self.fields.iter().find(|f| f.key == entry.key) {
                Some(field) => {
                    if let Some(read) = &field.read {
                        read(cx, &entry.value, into, path);
                    }
                }
                None => unknown_key(cx, self.id, path, entry.key, entry.key_span.clone()),
            }
        }
        for field in &self.fields {
            if let Some((message, hint)) = field.required
                && !table.has(field.key)
            {
                cx.missing(path, field.key, table.span(), message, hint);
            }
        }
        cx.problems() == before
    }

    /// Reads `table` into a new value that starts as the default.
    pub(crate) fn read(&self, cx: &mut Cx, table: &TomlTable, path: &str) -> (T, bool)
    where
        T: Default,
    {
        let mut value = T::default();
        let ok = self.read_into(cx, table, path, &mut value);
        (value, ok)
    }
}
