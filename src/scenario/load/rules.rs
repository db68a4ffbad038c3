//! Rules: `{ stage, when, then }`. The stage is read first, since what the conditions
//! may test and which action may be used depend on it; both are checked over the spec's
//! rows, so each such problem is phrased in one place.

use std::collections::HashMap;
use std::sync::Arc;

use crate::scenario::model::{Action, ActionKind, Condition, Rule, Stage};
use crate::scenario::read::tree::{Span, Table};
use crate::scenario::read::{Cx, Key, closest, did_you_mean, values};
use crate::scenario::spec::tables::{self, STAGE_NAMES};
use crate::scenario::spec::then::{self, Role, Then};
use crate::scenario::spec::when::{self, When};
use crate::scenario::spec::{self, TableId, unknown_key};

/// Rule sets by name: their rules, and where the name is written.
pub(super) type Rulesets = HashMap<String, (Vec<Rule>, Span)>;

/// Every `[[ruleset]]`, by name.
pub(super) fn rulesets(cx: &mut Cx, sets: &[Table]) -> Rulesets {
    let mut found = Rulesets::new();
    for (i, set) in sets.iter().enumerate() {
        let path = format!("ruleset.{i}");
        let (draft, _) = tables::ruleset().read(cx, set, &path);
        let named = set.get(tables::NAME).filter(|_| !draft.name.is_empty());
        let label = match &named {
            Some(_) => format!("ruleset {}", draft.name),
            None => format!("ruleset #{}", i + 1),
        };
        let list = match set.get(tables::RULE) {
            Some(v) => spec::tables_at(cx, tables::RULE, &v),
            None => Vec::new(),
        };
        let rules = rules(cx, &list, &label, &path);
        let Some(name_node) = named else { continue };
        if let Some((_, first)) = found.get(&draft.name) {
            let line = cx.line(first);
            cx.issue(
                name_node.span(),
                format!("there are two rule sets named `{}`", draft.name),
                format!("the first is on line {line}; rename one of them or merge their rules"),
            );
        } else {
            found.insert(draft.name, (rules, name_node.span()));
        }
    }
    found
}

/// A list of rules; `label` is `host mx1` or `ruleset common`, `path` the path of the
/// host or rule set (`host.0`).
pub(super) fn rules(cx: &mut Cx, list: &[Table], label: &str, path: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    // The first rule of each stage that has no conditions: it shadows later ones.
    let mut catch_all: HashMap<Stage, usize> = HashMap::new();
    for (i, rule) in list.iter().enumerate() {
        let number = i + 1;
        let path = format!("{path}.rule.{i}");
        tables::rule().read(cx, rule, &path);
        let stage = rule.get(tables::STAGE).and_then(|v| stage(cx, &v));
        if let Some(stage) = stage {
            if let Some(first) = catch_all.get(&stage) {
                cx.issue(
                    rule.span(),
                    format!(
                        "{label} rule {number} can never match: rule {first} above it matches every `{stage}` first"
                    ),
                    format!(
                        "rules are tried in order and the first match wins; move this rule above rule {first}, or give rule {first} a `when`"
                    ),
                );
            }
            if matches_every(rule) {
                catch_all.entry(stage).or_insert(number);
            }
        }
        let when = match rule.get(tables::WHEN) {
            Some(v) => spec::table_at(cx, TableId::When, &v)
                .map(|w| conditions(cx, &w, stage, &format!("{path}.when")))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let then = rule.get(tables::THEN).and_then(|v| {
            let table = spec::table_at(cx, TableId::Then, &v)?;
            action(cx, &table, stage, &format!("{path}.then"))
        });
        if let (Some(stage), Some(then)) = (stage, then) {
            rules.push(Rule {
                stage,
                when,
                then,
                origin: Arc::from(format!("{label} rule {number}")),
            });
        }
    }
    rules
}

/// Whether a rule matches every command of its stage and decides it: no condition, and
/// an action that does not pass on (greylisting and limits let what they do not refuse
/// pass on to later rules).
fn matches_every(rule: &Table) -> bool {
    let unconditional = match rule.get(tables::WHEN) {
        None => true,
        Some(v) => v.as_table().is_some_and(|w| {
            let keys: Vec<&str> = when::conditions().iter().map(|c| c.key).collect();
            w.entries().iter().all(|e| !keys.contains(&e.key))
        }),
    };
    let passes_on = rule
        .get(tables::THEN)
        .and_then(|t| t.as_table())
        .is_some_and(|t| then::passing_on().any(|k| t.has(k)));
    unconditional && !passes_on
}

fn stage(cx: &mut Cx, v: &crate::scenario::read::tree::Node) -> Option<Stage> {
    let key = Key {
        name: tables::STAGE,
        example: "\"rcpt\"",
    };
    let name = values::string(cx, key, v)?;
    let lower = name.trim().to_ascii_lowercase();
    if let Some(stage) = Stage::parse(&lower) {
        return Some(stage);
    }
    let alias = match lower.as_str() {
        "eod" | "dot" | "eom" | "end-of-message" | "end" | "message" | "end_of_data"
        | "enddata" => Some("end-of-data"),
        "greeting" | "banner" | "connection" => Some("connect"),
        "mail-from" | "from" | "sender" => Some("mail"),
        "rcpt-to" | "to" | "recipient" => Some("rcpt"),
        "tls" | "start-tls" | "start_tls" | "stls" => Some("starttls"),
        _ => None,
    };
    let names = Stage::ALL.map(Stage::as_str);
    let suggestion = alias.or_else(|| closest(&lower, names.iter().copied()));
    let hint = match suggestion {
        Some(s) => did_you_mean(s, &format!("the stages are {STAGE_NAMES}")),
        None => format!("the stages are {STAGE_NAMES}"),
    };
    cx.issue(v.span(), format!("unknown stage `{name}`"), hint);
    None
}

/// The conditions of `when`, each checked against what the stage knows.
fn conditions(cx: &mut Cx, table: &Table, stage: Option<Stage>, path: &str) -> Vec<Condition> {
    let rows = when::conditions();
    for entry in table.entries() {
        if !rows.iter().any(|row| row.key == entry.key) {
            unknown_key(cx, TableId::When, path, entry.key, entry.key_span.clone());
        }
    }
    let context = When { table, stage };
    let mut conditions = Vec::new();
    for row in rows {
        let Some(v) = table.get(row.key) else {
            continue;
        };
        if let (Some(need), Some(stage)) = (row.needs, stage) {
            when::check_need(cx, row.key, need, stage, v.span());
        }
        let key = Key {
            name: row.key,
            example: row.example,
        };
        if let Some(condition) = (row.read)(cx, key, &v, &context) {
            conditions.push(condition);
        }
    }
    when::check_together(cx, table, &conditions);
    conditions
}

/// The one action of `then`, with its delay.
fn action(cx: &mut Cx, table: &Table, stage: Option<Stage>, path: &str) -> Option<Action> {
    let rows = then::actions();
    for entry in table.entries() {
        if !rows.iter().any(|row| row.key == entry.key) {
            unknown_key(cx, TableId::Then, path, entry.key, entry.key_span.clone());
        }
    }
    let misspelt = cx.has_unknown(path);
    let context = Then { table, stage, path };
    let delay = then::delay(cx, table);
    // Every value is read, so that each problem in it is reported, before the one action
    // is chosen.
    let mut present: Vec<&str> = Vec::new();
    let mut read: Vec<Option<ActionKind>> = Vec::new();
    for row in rows.iter().filter(|row| row.role != Role::Modifier) {
        let Some(v) = table.get(row.key) else {
            continue;
        };
        if let Some(stage) = stage
            && !row.stages.is_empty()
            && !row.stages.contains(&stage)
        {
            cx.issue(
                v.span(),
                format!(
                    "`{}` cannot be used at `{stage}`: {}",
                    row.key, row.stage_why
                ),
                row.stage_hint,
            );
        }
        let key = Key {
            name: row.key,
            example: row.form,
        };
        let kind = (row.read)(cx, key, &v, &context);
        // `close` modifies `reply`, and is an action only without one (`close = false`
        // alone is no action at all).
        let alone = match row.role {
            Role::ActionOrModifierOf(owner) => !table.has(owner) && v.as_bool() != Some(false),
            _ => true,
        };
        if alone {
            present.push(row.key);
            read.push(kind);
        }
    }
    match present.len() {
        0 if table.has(then::DELAY) => {
            return delay.flatten().map(|d| Action {
                delay: Some(d),
                kind: ActionKind::Accept,
            });
        }
        0 => {
            if !misspelt {
                cx.issue(
                    table.span(),
                    "`then` has no action",
                    format!(
                        "{} (or delay = \"...\" alone: accept after a wait)",
                        then::one_action_hint()
                    ),
                );
            }
            return None;
        }
        1 => {}
        n => {
            cx.issue(
                table.span(),
                format!("`then` has {n} actions: {}", present.join(", ")),
                then::conflict_hint(&present),
            );
            return None;
        }
    }
    let kind = read.pop().flatten()?;
    match delay {
        Some(None) => None,
        Some(Some(d)) => Some(Action {
            delay: Some(d),
            kind,
        }),
        None => Some(Action { delay: None, kind }),
    }
}
