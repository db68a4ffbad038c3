//! The placeholders of reply texts ([`Placeholder`]): what each stands for, the words a
//! newcomer may write for one, and the check of every `{` in a reply.

use crate::scenario::model::Placeholder;
use crate::scenario::read::tree::{Node, Span};
use crate::scenario::read::{Cx, closest, did_you_mean};

/// What a placeholder stands for, in the reference and in hints.
pub(crate) fn doc(p: Placeholder) -> &'static str {
    match p {
        Placeholder::Client => "the client's IP address",
        Placeholder::Helo => "the EHLO/HELO name",
        Placeholder::Sender => "the sender",
        Placeholder::Recipient => "the recipient (at data and later: the first accepted)",
        Placeholder::Domain => "the recipient's domain",
        Placeholder::Hostname => "the host's hostname",
        Placeholder::Remaining => "seconds a greylisted client has left to wait",
        Placeholder::RemainingHms => "the same as HH:MM:SS",
    }
}

/// Other words for a placeholder, and the one meant.
const ALIASES: [(&str, Placeholder); 10] = [
    ("ip", Placeholder::Client),
    ("addr", Placeholder::Client),
    ("address", Placeholder::Client),
    ("ehlo", Placeholder::Helo),
    ("from", Placeholder::Sender),
    ("mail", Placeholder::Sender),
    ("to", Placeholder::Recipient),
    ("rcpt", Placeholder::Recipient),
    ("host", Placeholder::Hostname),
    ("seconds", Placeholder::Remaining),
];

/// "the placeholders are {client}, ..., and in a greylist reply {remaining} (...)".
pub(crate) fn list() -> String {
    let note = |p: Placeholder| match p {
        Placeholder::Domain => " (the recipient's)",
        Placeholder::Remaining => " (seconds left to wait)",
        Placeholder::RemainingHms => " (the same as HH:MM:SS)",
        _ => "",
    };
    let shown = |p: Placeholder| format!("{{{}}}{}", p.name(), note(p));
    let (greylist, everywhere): (Vec<Placeholder>, Vec<Placeholder>) = Placeholder::ALL
        .into_iter()
        .partition(|p| p.only_in_greylist());
    let everywhere: Vec<String> = everywhere.into_iter().map(shown).collect();
    let greylist: Vec<String> = greylist.into_iter().map(shown).collect();
    format!(
        "the placeholders are {}, and in a greylist reply {}",
        everywhere.join(", "),
        greylist.join(" and ")
    )
}

/// Checks every `{` of a reply text `text` (the value `v`) starts a known placeholder,
/// and that greylist-only ones are only in a greylist reply; false if not.
pub(crate) fn check(cx: &mut Cx, v: &Node, text: &str, greylist: bool) -> bool {
    let mut ok = true;
    let mut from = 0;
    let mut nth = 0;
    while let Some(open) = text[from..].find('{').map(|i| from + i) {
        let after = &text[open + 1..];
        let name = after.find('}').map(|close| &after[..close]);
        let written = match name {
            Some(name) => format!("{{{name}}}"),
            None => "{".to_string(),
        };
        let span = inner_span(cx, v, nth, &written);
        nth += 1;
        from = open + 1;
        match name.map(|n| (n, Placeholder::parse(n))) {
            Some((name, Some(p))) => {
                if !greylist && p.only_in_greylist() {
                    ok = false;
                    cx.issue(
                        span,
                        format!("`{{{name}}}` is known only in a greylist reply: here it would always be 0"),
                        "remove it; it is how long a greylisted client has left to wait, for greylist = { reply = \"...\" }",
                    );
                }
            }
            Some((name, None))
                if !name.is_empty() && name.len() <= 30 && !name.contains(['{', ' ']) =>
            {
                ok = false;
                let names = Placeholder::ALL.map(Placeholder::name);
                let suggestion = ALIASES
                    .iter()
                    .find(|(alias, _)| name.eq_ignore_ascii_case(alias))
                    .map(|(_, p)| p.name())
                    .or_else(|| closest(name, names));
                let hint = match suggestion {
                    Some(close) => did_you_mean(&format!("{{{close}}}"), &list()),
                    None => list(),
                };
                cx.issue(
                    span,
                    format!("unknown placeholder `{{{name}}}` in the reply"),
                    hint,
                );
            }
            _ => {
                ok = false;
                cx.issue(
                    span,
                    "a `{` in the reply that starts no placeholder",
                    format!(
                        "a reply cannot hold a `{{` of its own: remove it; {}",
                        list()
                    ),
                );
            }
        }
    }
    ok
}

/// Where the `nth` `{` of a string value is written in the file, `written` long; the
/// whole value if it cannot be found (escapes in the string).
fn inner_span(cx: &Cx, v: &Node, nth: usize, written: &str) -> Span {
    let span = v.span();
    let Some(source) = cx.text.get(span.clone()) else {
        return span;
    };
    match source.match_indices('{').nth(nth) {
        Some((i, _)) if source[i..].starts_with(written) => {
            span.start + i..span.start + i + written.len()
        }
        Some((i, _)) => span.start + i..span.start + i + 1,
        None => span,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_names_every_placeholder_as_hints_have_always_said() {
        assert_eq!(
            super::list(),
            "the placeholders are {client}, {helo}, {sender}, {recipient}, {domain} (the recipient's), {hostname}, and in a greylist reply {remaining} (seconds left to wait) and {remaining-hms} (the same as HH:MM:SS)"
        );
    }
}
