//! The machinery of reading a scenario: the document's tree ([`tree`]), the context that
//! collects every problem ([`Cx`]), and one reader per kind of value ([`values`]). It
//! knows nothing of the format's vocabulary, which is the [`spec`](super::spec)'s.

pub(crate) mod ranges;
pub(crate) mod records;
pub(crate) mod tree;
pub(crate) mod values;

use std::collections::HashMap;
use std::path::Path;

use super::error::{Issue, Lines};
use tree::Span;

/// Where a scenario is being read, and every problem found so far.
pub(crate) struct Cx<'t> {
    pub text: &'t str,
    /// The directory of the scenario file, for relative paths (`None`: the current one).
    pub dir: Option<&'t Path>,
    issues: Vec<Issue>,
    /// The unknown keys reported, by the path of their table: a misspelt required key is
    /// then not reported missing as well. (A map: a file of thousands of tables, each with
    /// an unknown key, would otherwise be searched whole for every table.)
    unknown: HashMap<String, Vec<String>>,
    /// Where the text's lines start, for hints that name another line.
    lines: Lines,
}

/// A key as problems name it: its name, and an example value for hints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub name: &'static str,
    /// A value as a file writes it, like `"5m"` (quotes included).
    pub example: &'static str,
}

impl<'t> Cx<'t> {
    pub(crate) fn new(text: &'t str, dir: Option<&'t Path>) -> Self {
        Self {
            text,
            dir,
            issues: Vec::new(),
            unknown: HashMap::new(),
            lines: Lines::new(text),
        }
    }

    pub(crate) fn issue(
        &mut self,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.issues.push(Issue {
            span,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// How many problems were found so far: a reader compares before and after to know
    /// whether what it read had one.
    pub(crate) fn problems(&self) -> usize {
        self.issues.len()
    }

    pub(crate) fn into_issues(self) -> Vec<Issue> {
        self.issues
    }

    /// Notes an unknown key in the table at `path` (its problem is reported apart).
    pub(crate) fn note_unknown(&mut self, path: &str, key: &str) {
        self.unknown
            .entry(path.to_string())
            .or_default()
            .push(key.to_string());
    }

    /// Reports that the table at `path` lacks `key`, unless an unknown key there is a
    /// likely misspelling of it, which was reported already.
    pub(crate) fn missing(&mut self, path: &str, key: &str, span: Span, message: &str, hint: &str) {
        let misspelt = self
            .unknown
            .get(path)
            .is_some_and(|keys| keys.iter().any(|unknown| closest(unknown, [key]).is_some()));
        if !misspelt {
            self.issue(span, message, hint);
        }
    }

    /// Whether the table at `path` has an unknown key.
    pub(crate) fn has_unknown(&self, path: &str) -> bool {
        self.unknown.contains_key(path)
    }

    /// The 1-based line of a place in the text, for hints that point at another line.
    pub(crate) fn line(&self, span: &Span) -> usize {
        self.lines.number(span.start)
    }
}

/// "did you mean `x`? The ...": a suggestion, then what else there is.
pub(crate) fn did_you_mean(suggestion: &str, rest: &str) -> String {
    let mut chars = rest.chars();
    let rest = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("did you mean `{suggestion}`? {rest}")
}

/// The candidate closest to `word`, if one is close enough to be a likely typo: at most a
/// third of its letters apart (at least one), counting a swap of two neighbours as one
/// edit, since `relpy` for `reply` is the commonest typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let word = norm(word);
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&word, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_but_not_unrelated_words() {
        let keys = ["accept", "reply", "close", "hang", "delay"];
        assert_eq!(closest("relpy", keys), Some("reply"));
        assert_eq!(closest("Accept", keys), Some("accept"));
        assert_eq!(closest("tarpit", keys), None);
        assert_eq!(closest("max_errors", ["max-errors"]), Some("max-errors"));
        assert_eq!(
            did_you_mean("mx1", "the hosts are: mx1"),
            "did you mean `mx1`? The hosts are: mx1"
        );
    }
}
