//! `ScenarioError`: every problem found in a scenario file, each with its place and a hint,
//! rendered the way rustc renders its errors so that a newcomer can fix them all at once.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

/// One thing wrong with a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line of the problem in the file; 0 when it has no place in the file (the
    /// file could not be read, or an embedded scenario does not exist).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, e.g. "unknown key `relpy` in `then`".
    pub message: String,
    /// What to write instead.
    pub hint: String,
    /// Byte range of the offending text in the file, if it has a place.
    #[serde(skip)]
    pub span: Option<Range<usize>>,
}

/// A scenario that could not be loaded, with every problem found in it.
#[derive(Clone, PartialEq, Eq)]
pub struct ScenarioError {
    file: String,
    source: Option<String>,
    problems: Vec<Problem>,
}

/// A problem found while validating, before line numbers are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub span: Range<usize>,
    pub message: String,
    pub hint: String,
}

impl ScenarioError {
    /// Problems found in `source` (the text of `file`), sorted by their place in the file.
    pub(crate) fn from_issues(file: &str, source: &str, mut issues: Vec<Issue>) -> Self {
        issues.sort_by_key(|i| (i.span.start, i.span.end));
        issues.dedup();
        let problems = issues
            .into_iter()
            .map(|issue| {
                let span = clamp_span(source, issue.span);
                let (line, column) = line_column(source, span.start);
                Problem {
                    line,
                    column,
                    message: issue.message,
                    hint: issue.hint,
                    span: Some(span),
                }
            })
            .collect();
        Self {
            file: file.to_string(),
            source: Some(source.to_string()),
            problems,
        }
    }

    /// A problem that has no place in a file, such as a file that cannot be read.
    pub(crate) fn without_source(file: &str, message: String, hint: String) -> Self {
        Self {
            file: file.to_string(),
            source: None,
            problems: vec![Problem {
                line: 0,
                column: 0,
                message,
                hint,
                span: None,
            }],
        }
    }

    /// The file (or embedded scenario) the problems are in.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every problem, in the order they appear in the file.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ScenarioError {
    /// Every problem as rustc shows its errors: the message, the file, line and column, the
    /// line with the offending text underlined, and a `help:` line; then how many there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(source) = &self.source else {
            // Nothing to point at (the file could not be read): the message and the help.
            for (i, problem) in self.problems.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "error: {}\n  = help: {}", problem.message, problem.hint)?;
            }
            return Ok(());
        };
        let renderer = Renderer::plain();
        for problem in &self.problems {
            let mut snippet = Snippet::source(source.as_str()).path(self.file.as_str());
            if let Some(span) = &problem.span {
                snippet = snippet.annotation(AnnotationKind::Primary.span(span.clone()));
            }
            let group = Group::with_title(Level::ERROR.primary_title(problem.message.as_str()))
                .element(snippet)
                .element(Level::HELP.message(problem.hint.as_str()));
            writeln!(f, "{}\n", renderer.render(&[group]))?;
        }
        let n = self.problems.len();
        write!(
            f,
            "error: {} has {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl fmt::Debug for ScenarioError {
    /// The rendered problems, so that a failing `unwrap()` in a test reads well.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScenarioError:\n{self}")
    }
}

impl std::error::Error for ScenarioError {}

/// Keeps a span inside the text and on character boundaries, so rendering never panics.
fn clamp_span(source: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, source.len());
    while !source.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// The 1-based line and character column of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters
        assert_eq!(line_column(src, 12), (2, 6));
    }

    #[test]
    fn renders_every_problem_and_a_count() {
        let src = "name = 1\nseed = \"x\"\n";
        let err = ScenarioError::from_issues(
            "t.toml",
            src,
            vec![
                Issue {
                    span: 16..19,
                    message: "second".into(),
                    hint: "fix it".into(),
                },
                Issue {
                    span: 7..8,
                    message: "first".into(),
                    hint: "fix that".into(),
                },
            ],
        );
        let text = err.to_string();
        assert!(text.find("first").unwrap() < text.find("second").unwrap());
        assert!(text.contains("t.toml:1:8"), "{text}");
        assert!(text.contains("t.toml:2:8"), "{text}");
        assert!(text.ends_with("error: t.toml has 2 problems"), "{text}");
        assert_eq!(err.problems()[0].line, 1);
        assert_eq!(err.problems()[1].column, 8);
    }

    #[test]
    fn clamps_spans_outside_the_text() {
        let err = ScenarioError::from_issues(
            "t.toml",
            "é",
            vec![Issue {
                span: 1..99,
                message: "m".into(),
                hint: "h".into(),
            }],
        );
        assert_eq!(err.problems()[0].span, Some(0..2));
        let _ = err.to_string();
    }
}
