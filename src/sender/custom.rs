//! A retry schedule of your own, for an application's queue: waits after each failed
//! try (the last repeating), when to give up, how to pick MX hosts. From `--set` or a
//! small TOML file with the same keys:
//!
//! ```toml
//! retry = "1m, 5m, 30m, 2h"     # waits after the 1st, 2nd, ... failed try; the last repeats
//! give-up-after = "3d"          # bounce when deferred this long after arrival
//! mx = "shuffle"                # preference order, equal ones shuffled ("in-order": as
//!                               # listed; "first": only the most preferred host)
//! hosts-per-try = 5
//! delay-warning = "4h"          # warn the sender once at this age ("0": never)
//! lanes = 10                    # deliveries at once
//! timeout = "5m"                # wait for each reply; twice that for the end of data
//! ```

use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Timeouts};
use super::model::{MessageView, Model, Mx, Next, Notice, Plan, TryEnd, WarnedOnce, order_hosts};
use super::params::{Kind, Params, Spec, compact, parse_duration};

const OURS: &str = "mxfarm's choice for an application queue";

pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "retry",
        kind: Kind::Text(check_waits),
        default: "1m, 5m, 15m, 30m, 1h",
        source: OURS,
        what: "waits after each failed try, comma-separated, the last repeating",
    },
    Spec {
        name: "give-up-after",
        kind: Kind::Duration,
        default: "3d",
        source: "[S] ESPs retry for 72 hours (SendGrid, Robly; reference §6.6)",
        what: "age after which a deferred message bounces",
    },
    Spec {
        name: "mx",
        kind: Kind::Text(check_mx),
        default: "shuffle",
        source: "RFC 5321 §5.1: by preference, equal ones in random order",
        what: "shuffle, in-order or first",
    },
    Spec {
        name: "hosts-per-try",
        kind: Kind::Count,
        default: "5",
        source: OURS,
        what: "hosts tried per try",
    },
    Spec {
        name: "delay-warning",
        kind: Kind::Duration,
        default: "0",
        source: OURS,
        what: "age at which the sender is warned once (0: never)",
    },
    Spec {
        name: "lanes",
        kind: Kind::Count,
        default: "10",
        source: OURS,
        what: "deliveries at once",
    },
    Spec {
        name: "timeout",
        kind: Kind::Duration,
        default: "5m",
        source: "RFC 5321 §4.5.3.2: 5 minutes for the greeting, MAIL and RCPT",
        what: "wait for each reply (twice that for the end of data)",
    },
];

fn parse_waits(text: &str) -> Result<Vec<Duration>, String> {
    let waits: Vec<Duration> = text
        .split(',')
        .map(|w| parse_duration(w).map_err(|e| format!("{}: {e}", w.trim())))
        .collect::<Result<_, _>>()?;
    if waits.iter().any(Duration::is_zero) {
        return Err("a wait of 0 would retry at once for ever; write e.g. 1m".to_string());
    }
    Ok(waits)
}

fn check_waits(text: &str) -> Result<(), String> {
    parse_waits(text).map(|_| ())
}

fn check_mx(text: &str) -> Result<(), String> {
    match text {
        "shuffle" | "in-order" | "first" => Ok(()),
        _ => Err("expected shuffle, in-order or first".to_string()),
    }
}

/// Reads a schedule file into `params`: its keys are the parameters' names. A problem
/// names the file, line and column.
pub(super) fn load(params: &mut Params, file: &str, text: &str) -> Result<(), String> {
    let place = |span: std::ops::Range<usize>| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
        format!("{file}:{line}:{column}")
    };
    let spanned: std::collections::BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
    for (key, value) in spanned {
        let shown = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            other => {
                return Err(format!(
                    "{}: {} must be a string or a number, not {}",
                    place(value.span()),
                    key.get_ref(),
                    other.type_str()
                ));
            }
        };
        params
            .set(SPECS, key.get_ref(), &shown)
            .map_err(|e| format!("{}: {e}", place(key.span())))?;
    }
    Ok(())
}

pub(super) struct Custom {
    waits: Vec<Duration>,
    give_up: Duration,
    mx: String,
    hosts_per_try: usize,
    delay_warning: Duration,
    lanes: usize,
    timeouts: Timeouts,
    warned: WarnedOnce,
}

impl Custom {
    pub(super) fn new(p: &Params) -> Custom {
        let t = p.duration("timeout");
        Custom {
            waits: parse_waits(p.text("retry")).unwrap_or_default(),
            give_up: p.duration("give-up-after"),
            mx: p.text("mx").to_string(),
            hosts_per_try: usize::try_from(p.count("hosts-per-try")).unwrap_or(usize::MAX),
            delay_warning: p.duration("delay-warning"),
            lanes: usize::try_from(p.count("lanes")).unwrap_or(1),
            timeouts: Timeouts {
                greeting: t,
                helo: t,
                mail: t,
                rcpt: t,
                data: t,
                dot: t * 2,
            },
            warned: WarnedOnce::default(),
        }
    }
}

impl Model for Custom {
    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn helo(&self) -> &str {
        "app.sender.test"
    }

    fn plan(
        &mut self,
        message: &MessageView,
        mx: &[Mx],
        _: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Plan {
        let limit = if self.mx == "first" {
            1
        } else {
            self.hosts_per_try
        };
        Plan::Try {
            hosts: order_hosts(mx, self.mx == "shuffle", limit, rng),
            recipients: message.pending.iter().map(|(i, _)| *i).collect(),
        }
    }

    fn after_session(&mut self, _: &MessageView, _: &str, _: &Session, _: Duration) -> bool {
        true
    }

    fn next(&mut self, message: &MessageView, _: Option<&TryEnd>, now: Duration) -> Next {
        if now.saturating_sub(message.arrived) >= self.give_up {
            return Next::GiveUp {
                why: format!("gave up after {}", compact(self.give_up)),
            };
        }
        // `tries` counts this one: the first failure takes the first wait.
        let n = message.tries.saturating_sub(1);
        let wait = self
            .waits
            .get(n)
            .or(self.waits.last())
            .copied()
            .unwrap_or(Duration::from_secs(60));
        Next::At(now + wait)
    }

    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice> {
        if !self.warned.due(
            message,
            now,
            Some(self.delay_warning).filter(|d| !d.is_zero()),
        ) {
            return Vec::new();
        }
        vec![Notice {
            text: format!("still not delivered after {}", compact(self.delay_warning)),
        }]
    }

    fn bounce(&self, why: &str) -> String {
        format!("not delivered: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_file_sets_the_parameters_and_its_mistakes_are_placed() {
        let mut p = Params::defaults("custom", SPECS);
        load(
            &mut p,
            "q.toml",
            "retry = \"2m, 10m\"\ngive-up-after = \"1d\"\nlanes = 3\n",
        )
        .unwrap();
        assert_eq!(p.duration("give-up-after").as_secs(), 86_400);
        assert_eq!(p.count("lanes"), 3);
        let unknown = load(&mut p, "q.toml", "retry = \"1m\"\n  giveup = \"1d\"\n").unwrap_err();
        assert!(
            unknown.starts_with("q.toml:2:3: custom has no parameter \"giveup\""),
            "{unknown}"
        );
        assert!(unknown.contains("give-up-after"), "{unknown}");
        let bad = load(&mut p, "q.toml", "mx = \"random\"\n").unwrap_err();
        assert!(
            bad.contains("q.toml:1:1") && bad.contains("shuffle, in-order or first"),
            "{bad}"
        );
        let syntax = load(&mut p, "q.toml", "retry = \n").unwrap_err();
        assert!(syntax.starts_with("q.toml: "), "{syntax}");
    }
}
