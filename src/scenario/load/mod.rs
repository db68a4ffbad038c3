//! From TOML text to a validated [`Scenario`]: the parser's spanned tree is walked table
//! by table through the [spec](super::spec), every problem collected with its place and a
//! hint, so that an author fixes a broken file in one pass.
//!
//! - this file: the whole file, in the order its parts depend on each other (rule sets
//!   before the hosts that list them, hosts before the MX records that name them);
//! - [`hosts`]: `[[host]]`, its rule sets and listen addresses;
//! - [`tls`]: a host's `tls`;
//! - [`rules`]: rules: the stage, then the conditions and the action it allows;
//! - [`domains`]: `[[domain]]` and `[reverse-dns]`;
//! - [`dns`]: `[dns]`, its record lines and its fault rules.

mod dns;
mod domains;
mod hosts;
mod rules;
mod tls;

use std::path::Path;

use toml::de::DeTable;

use super::error::Issue;
use super::model::Scenario;
use super::read::Cx;
use super::read::tree::Table;
use super::spec::{self, tables};

/// Reads and validates scenario text; relative paths in it (a host's `cert` and `key`)
/// are relative to `dir` (`None`: the current directory).
pub(crate) fn load(text: &str, dir: Option<&Path>) -> Result<Scenario, Vec<Issue>> {
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => return Err(vec![unreadable(&error, text)]),
    };
    let mut cx = Cx::new(text, dir);
    let root = Table::root(&document);
    let (mut scenario, _) = tables::root().read(&mut cx, &root, "");
    let sets = match root.get(tables::RULESET) {
        Some(v) => spec::tables_at(&mut cx, tables::RULESET, &v),
        None => Vec::new(),
    };
    let rulesets = rules::rulesets(&mut cx, &sets);
    let host_tables = match root.get(tables::HOST) {
        Some(v) => spec::tables_at(&mut cx, tables::HOST, &v),
        None => Vec::new(),
    };
    // A `host` of the wrong shape is reported as such, not as missing hosts too.
    let host_list = root.get(tables::HOST).map(|v| v.as_list().is_some());
    if host_tables.is_empty() && host_list != Some(false) {
        cx.issue(
            0..0,
            "the scenario has no hosts",
            "add at least one MX host: [[host]] with name = \"mx1\" and listen = \"127.0.0.1:2525\"",
        );
    }
    scenario.hosts = hosts::hosts(&mut cx, &host_tables, &rulesets);
    let names: Vec<String> = host_tables
        .iter()
        .filter_map(|h| h.get(tables::NAME)?.as_str().map(str::to_string))
        .collect();
    if let Some(v) = root.get(tables::DOMAIN) {
        let tables = spec::tables_at(&mut cx, tables::DOMAIN, &v);
        scenario.domains = domains::domains(&mut cx, &tables, &names);
    }
    if let Some(v) = root.get(tables::REVERSE_DNS) {
        scenario.reverse_dns = domains::reverse_dns(&mut cx, &v);
    }
    if let Some(v) = root.get(spec::dns::DNS) {
        scenario.dns = dns::dns_settings(&mut cx, &v);
    }
    let issues = cx.into_issues();
    if issues.is_empty() {
        Ok(scenario)
    } else {
        Err(issues)
    }
}

/// The problem for TOML that cannot be read at all.
fn unreadable(error: &toml::de::Error, text: &str) -> Issue {
    let span = error.span().unwrap_or(0..0);
    // toml phrases some errors over several lines ("invalid string\nexpected `\"`"):
    // keep them on one line, it reads as one sentence.
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let span = if span.start >= text.len() && !text.is_empty() {
        // "unexpected end of file": point at the last character rather than past it.
        text.len() - text.chars().next_back().map_or(0, char::len_utf8)..text.len()
    } else {
        span
    };
    let hint = if message.contains("duplicate key") {
        "a key can appear only once in a table; remove one of them"
    } else if message.contains("must be quoted") {
        "put the value in quotes, like key = \"value\""
    } else if message.contains("basic string") || message.contains("literal string") {
        "end the string with a quote on the same line (use \"\"\" for text over several lines)"
    } else if message.contains("unclosed array") {
        "end the list with `]`"
    } else if message.contains("inline table") {
        "end the table with `}` (an inline table { ... } must fit on one line)"
    } else {
        "this is not valid TOML; see docs/scenario-format.md for examples of every key"
    };
    Issue {
        span,
        message: format!("invalid TOML: {message}"),
        hint: hint.to_string(),
    }
}

#[cfg(test)]
mod stateful_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
