//! The validation cases of `tests/fixtures/scenarios/*.cases`: scenario texts with the
//! problems (message and hint) that loading them must report, or none for those that must
//! load. They are data rather than Rust so that a case is easy to read and to add; the
//! format is described in that directory's README.md.
//!
//! One test runs them all and reports every failure at once, each with the file and line of
//! its case. A broken fixture is a failure too, never a case silently skipped, and so is
//! finding fewer cases than there are, so that the test cannot pass by checking nothing.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use mxfarm::Scenario;

/// The directory of the fixture files, relative to the crate.
const DIR: &str = "tests/fixtures/scenarios";
/// Fewer cases than this means files or cases went missing: there are about 300.
const AT_LEAST: usize = 250;
/// The line that starts a case: `=== <name>`.
const CASE: &str = "=== ";
/// The line between a case's expectations and its scenario text.
const TEXT: &str = "---";

/// One case of a fixture file.
struct Case {
    /// Where its `===` line is, e.g. `tests/fixtures/scenarios/hosts.cases:12`.
    place: String,
    /// The name it is loaded under: the file name and that line, e.g. `hosts.cases:12`.
    source: String,
    name: String,
    /// (message fragment, hint fragment) of each problem it must report; none means that
    /// it must load.
    expected: Vec<(String, String)>,
    text: String,
}

#[test]
fn every_fixture_case_is_reported_as_expected() {
    let mut failures = Vec::new();
    let cases = read_all(&mut failures);
    if cases.len() < AT_LEAST {
        failures.push(format!(
            "found only {} cases in {DIR}, expected at least {AT_LEAST}",
            cases.len()
        ));
    }
    failures.extend(cases.iter().filter_map(check));
    assert!(
        failures.is_empty(),
        "{DIR}: {} of the fixture checks failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The cases of every `*.cases` file, in file-name order; what cannot be read or parsed
/// goes to `failures`.
fn read_all(failures: &mut Vec<String>) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
    let mut paths: Vec<_> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cases"))
            .collect(),
        Err(e) => {
            failures.push(format!("cannot read {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    paths.sort();
    let mut cases = Vec::new();
    for path in paths {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        match fs::read_to_string(&path) {
            Ok(content) => cases.extend(parse(&file, &content, failures)),
            Err(e) => failures.push(format!("{DIR}/{file}: cannot read: {e}")),
        }
    }
    cases
}

/// The cases of one file. A case is a `=== <name>` line, `expect:` and `hint:` line pairs,
/// a `---` line and the scenario text, which runs to the next `=== ` line or the end of the
/// file, less its trailing blank lines. Before the first case, only comments (`#`) and blank
/// lines. A case that breaks the format is reported and left out.
fn parse(file: &str, content: &str, failures: &mut Vec<String>) -> Vec<Case> {
    let lines: Vec<&str> = content.lines().collect();
    let at = |i: usize| format!("{DIR}/{file}:{}", i + 1);
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(CASE))
        .collect();
    if starts.is_empty() {
        failures.push(format!("{DIR}/{file}: has no cases"));
    }
    let first = starts.first().copied().unwrap_or(lines.len());
    for (i, line) in lines[..first].iter().enumerate() {
        if !line.trim().is_empty() && !line.starts_with('#') {
            failures.push(format!(
                "{}: only comments may come before the first `=== <name>`, found {line:?}",
                at(i)
            ));
        }
    }
    let mut cases = Vec::new();
    let mut names = HashSet::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let name = lines[start][CASE.len()..].trim().to_string();
        let before = failures.len();
        if name.is_empty() {
            failures.push(format!("{}: a case without a name", at(start)));
        } else if !names.insert(name.clone()) {
            failures.push(format!("{}: a second case named {name:?}", at(start)));
        }
        let Some(separator) = (start + 1..end).find(|&i| lines[i] == TEXT) else {
            failures.push(format!(
                "{}: case {name:?} has no `---` line before its scenario text",
                at(start)
            ));
            continue;
        };
        let mut expected = Vec::new();
        let mut i = start + 1;
        while i < separator {
            let next = if i + 1 < separator { lines[i + 1] } else { "" };
            match (fragment(lines[i], "expect:"), fragment(next, "hint:")) {
                (Some(message), Some(hint)) => {
                    expected.push((message, hint));
                    i += 1;
                }
                (Some(_), None) => {
                    failures.push(format!("{}: `expect:` without `hint:` after it", at(i)))
                }
                (None, _) => failures.push(format!(
                    "{}: expected `expect:` (with `hint:` after it) or `---`, found {:?}",
                    at(i),
                    lines[i]
                )),
            }
            i += 1;
        }
        if failures.len() > before {
            continue;
        }
        let mut text = &lines[separator + 1..end];
        while let [rest @ .., last] = text
            && last.trim().is_empty()
        {
            text = rest;
        }
        cases.push(Case {
            place: at(start),
            source: format!("{file}:{}", start + 1),
            name,
            expected,
            text: text.iter().map(|line| format!("{line}\n")).collect(),
        });
    }
    cases
}

/// The rest of `line` after `key` and the one space that follows it, without trailing
/// spaces; `None` if the line is not that key.
fn fragment(line: &str, key: &str) -> Option<String> {
    let value = line.strip_prefix(key)?;
    Some(
        value
            .strip_prefix(' ')
            .unwrap_or(value)
            .trim_end()
            .to_string(),
    )
}

/// Loads the case; a description of what went wrong, if anything did.
fn check(case: &Case) -> Option<String> {
    let reported: Vec<(String, String)> = match Scenario::from_toml(&case.source, &case.text) {
        Ok(_) if case.expected.is_empty() => return None,
        Ok(_) => Vec::new(),
        Err(error) => error
            .problems()
            .iter()
            .map(|p| (p.message.clone(), p.hint.clone()))
            .collect(),
    };
    let mut what = Vec::new();
    if case.expected.is_empty() {
        what.push("expected it to load without problems".to_string());
    }
    for (message, hint) in &case.expected {
        if !reported
            .iter()
            .any(|(m, h)| m.contains(message.as_str()) && h.contains(hint.as_str()))
        {
            what.push(format!(
                "expected a problem whose message contains {message:?} and hint contains {hint:?}"
            ));
        }
    }
    if what.is_empty() {
        return None;
    }
    let mut out = format!("{}: {}\n  {}\n", case.place, case.name, what.join("\n  "));
    if reported.is_empty() {
        out.push_str("  it loaded without problems");
    } else {
        out.push_str("  problems reported:");
        for (message, hint) in &reported {
            out.push_str(&format!(
                "\n    - message: {message}\n      hint:    {hint}"
            ));
        }
    }
    Some(out)
}
