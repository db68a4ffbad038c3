//! The reference section of `docs/scenario-format.md`, generated from the spec, so that
//! the docs list exactly the keys the loader reads, with the model's defaults. A test
//! compares the file with what this renders; `MXFARM_UPDATE_DOCS=1 cargo test` rewrites
//! the section after a change to the spec.

use std::fmt::Write as _;

use super::field::Table;
use super::then::{self, Role};
use super::when;
use super::{TableId, dns, placeholders, stateful, tables};
use crate::scenario::model::{Concurrency, Greylist, Placeholder, RateLimit, Stage};

/// The line before the generated section.
#[cfg(test)]
const BEGIN: &str = "<!-- reference: generated from src/scenario/spec; MXFARM_UPDATE_DOCS=1 cargo test updates it -->";
/// The line after it.
#[cfg(test)]
const END: &str = "<!-- end of reference -->";

/// The whole reference, in Markdown.
pub(crate) fn reference() -> String {
    let mut out = String::new();
    out.push_str("## Reference\n\nEvery key the format has, generated from the loader's own list. A default is what\nleaving the key out means.\n");
    for id in TableId::ALL {
        let out = &mut out;
        match id {
            TableId::Root => table(out, tables::root(), "The top level"),
            TableId::Capture => table(out, tables::capture(), "`[capture]`"),
            TableId::Journal => table(out, tables::journal(), "`[journal]`"),
            TableId::FarmLimits => table(out, tables::farm_limits(), "`[limits]`"),
            TableId::Domain => table(out, tables::domain(), "`[[domain]]`"),
            TableId::Mx => table(out, tables::mx(), "An entry of `mx`"),
            TableId::Host => table(out, tables::host(), "`[[host]]`"),
            TableId::Tls => table(out, tables::tls(), "`tls` (in `[[host]]`)"),
            TableId::Extensions => table(out, tables::extensions(), "`[host.extensions]`"),
            TableId::Limits => table(out, tables::limits(), "`[host.limits]`"),
            TableId::Ruleset => table(out, tables::ruleset(), "`[[ruleset]]`"),
            TableId::Rule => {
                let title = "A rule (`[[host.rule]]`, `[[ruleset.rule]]`)";
                table(out, tables::rule(), title)
            }
            TableId::When => conditions(out),
            TableId::Then => actions(out),
            TableId::Greylist => table(out, stateful::greylist(), "`greylist = { ... }`"),
            TableId::RateLimit => table(out, stateful::rate_limit(), "`rate-limit = { ... }`"),
            TableId::Concurrency => table(out, stateful::concurrency(), "`concurrency = { ... }`"),
            TableId::TlsFault => table(out, stateful::tls_fault(), "`tls-fault = { ... }`"),
            TableId::Dns => table(out, dns::dns(), "`[dns]`"),
            TableId::DnsRule => table(out, dns::rule(), "`[[dns.rule]]`"),
            TableId::DnsWhen => table(out, dns::when(), "`when` of a DNS rule"),
            TableId::DnsThen => table(out, dns::then(), "`then` of a DNS rule"),
        }
    }
    placeholder_list(&mut out);
    defaults_of_replies(&mut out);
    out
}

fn table<T: 'static>(out: &mut String, table: &Table<T>, title: &str) {
    let _ = writeln!(out, "\n### {title}\n\n{}\n", table.doc);
    out.push_str("| key | takes | default | example | meaning |\n|---|---|---|---|---|\n");
    for field in &table.fields {
        let default = match (field.required, field.default_shown()) {
            (Some(_), _) => "required".to_string(),
            (None, Some(shown)) if !shown.is_empty() => format!("`{shown}`"),
            _ => "".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {default} | `{} = {}` | {} |",
            field.key,
            field.takes,
            field.key,
            field.example,
            cell(field.doc)
        );
    }
}

fn conditions(out: &mut String) {
    out.push_str("\n### Conditions (`when`)\n\nEvery condition of a rule must hold (AND); a list of values matches any of them (OR). A\ncondition on what its stage cannot know yet is an error.\n\n");
    out.push_str("| key | takes | stages | example | meaning |\n|---|---|---|---|---|\n");
    for row in when::conditions() {
        let stages = match row.needs {
            None => "any".to_string(),
            Some(need) => Stage::ALL
                .into_iter()
                .filter(|s| need.fact.unknown_at(*s).is_none())
                .map(Stage::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {stages} | `{} = {}` | {} |",
            row.key,
            row.takes,
            row.key,
            row.example,
            cell(row.doc)
        );
    }
}

fn actions(out: &mut String) {
    out.push_str("\n### Actions (`then`)\n\nA rule has exactly one action; `delay` may go with any (alone, it means accept after\nthe wait), `close` with `reply`.\n\n");
    out.push_str("| key | takes | stages | example | meaning |\n|---|---|---|---|---|\n");
    for row in then::actions() {
        let stages = if row.stages.is_empty() {
            "any".to_string()
        } else {
            row.stages
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let role = match row.role {
            Role::Action => "",
            Role::ActionOrModifierOf(_) | Role::Modifier => " (goes with an action)",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {stages} | `{}` | {}{role} |",
            row.key,
            row.takes,
            row.form,
            cell(row.doc)
        );
    }
}

fn placeholder_list(out: &mut String) {
    out.push_str("\n### Placeholders in replies\n\n| placeholder | stands for |\n|---|---|\n");
    for p in Placeholder::ALL {
        let only = if p.only_in_greylist() {
            " (greylist replies only)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| `{{{}}}` | {}{only} |",
            p.name(),
            placeholders::doc(p)
        );
    }
}

fn defaults_of_replies(out: &mut String) {
    out.push_str("\n### Default replies of the stateful actions\n\n");
    let replies = [
        ("greylist", Greylist::default().reply),
        ("rate-limit", RateLimit::default().reply),
        ("concurrency", Concurrency::default().reply),
    ];
    for (key, reply) in replies {
        let _ = writeln!(out, "- `{key}`: `{}`", reply.one_line());
    }
}

/// Text fit for a table cell: no `|` of its own.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format doc's reference section is what the spec says, word for word.
    #[test]
    fn the_format_doc_has_the_reference_of_the_spec() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scenario-format.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!(
                "{} has no reference section between {BEGIN} and {END}",
                path.display()
            );
        };
        let now = &doc[begin + BEGIN.len()..end];
        let wanted = format!("\n{}", reference());
        if now != wanted {
            if std::env::var_os("MXFARM_UPDATE_DOCS").is_some() {
                let updated = format!("{}{BEGIN}{wanted}{}", &doc[..begin], &doc[end..]);
                std::fs::write(&path, updated).unwrap();
                return;
            }
            panic!(
                "docs/scenario-format.md's reference is out of date with the spec; run\n  MXFARM_UPDATE_DOCS=1 cargo test --lib the_format_doc_has_the_reference\nand commit the result"
            );
        }
    }
}
