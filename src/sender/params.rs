//! A model's parameters: each under the MTA's own name, with its default and where that
//! default comes from, and `--set NAME=VALUE` read into it with an error that lists what
//! the model knows.
//!
//! Values are kept as typed [`Value`]s; a model reads them back by name once, when the
//! simulation starts, so a misspelt name is caught at `--set`, never halfway through a run.

use std::fmt;
use std::time::Duration;

/// What kind of value a parameter takes, and so how `--set` reads it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `300s`, `5m`, `4h`, `5d`, `1h30m`, a bare number of seconds, or a .NET TimeSpan
    /// (`00:15:00`, `2.00:00:00`) as Exchange writes them.
    Duration,
    /// A whole number.
    Count,
    /// `yes`/`no` (also `true`/`false`, `on`/`off`).
    Flag,
    /// Text the model reads itself (Exim's retry rules), checked by the function, which
    /// says what is wrong.
    Text(fn(&str) -> Result<(), String>),
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Duration(Duration),
    Count(u64),
    Flag(bool),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Duration(d) => f.write_str(&compact(*d)),
            Value::Count(n) => write!(f, "{n}"),
            Value::Flag(true) => f.write_str("yes"),
            Value::Flag(false) => f.write_str("no"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// One parameter a model knows.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as the MTA's documentation writes it.
    pub default: &'static str,
    /// Where the default is documented ([C] confirmed from the source named, [U] not
    /// confirmed: the value most often cited).
    pub source: &'static str,
    /// What it does in the model.
    pub what: &'static str,
}

/// A model's parameter values: its specs' defaults, then what `set` changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    model: &'static str,
    values: Vec<(&'static str, Value)>,
    /// The names `set` changed, in order, for the output's header.
    changed: Vec<&'static str>,
}

/// A `--set` the model cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("{model} has no parameter {name:?}; it knows: {known}")]
    Unknown {
        model: &'static str,
        name: String,
        known: String,
    },
    #[error("{name}={value:?}: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: String,
    },
    #[error("{given:?} is not NAME=VALUE; write e.g. --set maximal_backoff_time=1h")]
    NotAssignment { given: String },
}

impl Params {
    /// The defaults of `specs`. A default that does not read as its kind is a bug in the
    /// model's table, which a unit test of every model catches.
    pub(crate) fn defaults(model: &'static str, specs: &[Spec]) -> Params {
        let values = specs
            .iter()
            .filter_map(|s| Some((s.name, parse(s.kind, s.default).ok()?)))
            .collect();
        Params {
            model,
            values,
            changed: Vec::new(),
        }
    }

    /// Sets `name` (matched without regard to case, as Exchange's cmdlets match theirs)
    /// from text.
    pub fn set(&mut self, specs: &[Spec], name: &str, value: &str) -> Result<(), SetError> {
        let Some(spec) = specs.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
            return Err(SetError::Unknown {
                model: self.model,
                name: name.to_string(),
                known: specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
            });
        };
        let parsed = parse(spec.kind, value).map_err(|problem| SetError::Invalid {
            name: spec.name,
            value: value.to_string(),
            problem,
        })?;
        match self.values.iter_mut().find(|(n, _)| *n == spec.name) {
            Some((_, v)) => *v = parsed,
            None => self.values.push((spec.name, parsed)),
        }
        if !self.changed.contains(&spec.name) {
            self.changed.push(spec.name);
        }
        Ok(())
    }

    /// Sets from `NAME=VALUE`.
    pub fn assign(&mut self, specs: &[Spec], assignment: &str) -> Result<(), SetError> {
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(SetError::NotAssignment {
                given: assignment.to_string(),
            });
        };
        self.set(specs, name.trim(), value.trim())
    }

    /// The names changed from their defaults and their values, for the output's header.
    pub fn changed(&self) -> Vec<(&'static str, String)> {
        self.changed
            .iter()
            .filter_map(|n| Some((*n, self.get(n)?.to_string())))
            .collect()
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The duration `name` holds (zero if it is not a duration: a table bug tests catch).
    pub(crate) fn duration(&self, name: &str) -> Duration {
        match self.get(name) {
            Some(Value::Duration(d)) => *d,
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn count(&self, name: &str) -> u64 {
        match self.get(name) {
            Some(Value::Count(n)) => *n,
            _ => 0,
        }
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Flag(true)))
    }

    pub(crate) fn text(&self, name: &str) -> &str {
        match self.get(name) {
            Some(Value::Text(t)) => t,
            _ => "",
        }
    }
}

/// `5m`, `4h`, `1h30m`, `2d`, `0s`: a duration as a parameter would be written.
pub fn compact(d: Duration) -> String {
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 && millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    for (n, unit) in parts {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

/// Reads `text` as a value of `kind`.
pub(crate) fn parse(kind: Kind, text: &str) -> Result<Value, String> {
    match kind {
        Kind::Duration => parse_duration(text).map(Value::Duration),
        Kind::Count => text
            .parse()
            .map(Value::Count)
            .map_err(|_| "expected a whole number, e.g. 5".to_string()),
        Kind::Flag => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Ok(Value::Flag(true)),
            "no" | "false" | "off" => Ok(Value::Flag(false)),
            _ => Err("expected yes or no".to_string()),
        },
        Kind::Text(check) => check(text).map(|()| Value::Text(text.to_string())),
    }
}

/// A duration as the MTAs write them: Postfix's `300s`/`5d` (a bare number is seconds, as
/// Postfix reads its time parameters), Exim's `1h30m`, Exchange's TimeSpan `00:15:00` or
/// `2.00:00:00`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed = parse_any_duration(text)?;
    if parsed > MAX_DURATION {
        return Err("longer than 100 years; no MTA keeps mail that long".to_string());
    }
    Ok(parsed)
}

/// The longest duration a parameter, an offset or a limit takes: far from overflowing
/// when added to farm time.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

fn parse_any_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let hint = "write e.g. 300s, 15m, 4h, 5d, 1h30m or 00:15:00";
    if text.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    if text.contains(':') {
        return parse_timespan(text).ok_or_else(|| format!("not a TimeSpan; {hint}"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("too large; {hint}"));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        // Milliseconds, for arrival offsets a second apart or less (`+500ms`).
        let millis = c == 'm' && chars.next_if_eq(&'s').is_some();
        let unit = match c {
            _ if millis => 1,
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(format!("unknown unit {c:?}; {hint}")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("a unit without a number; {hint}"))?;
        number.clear();
        let part = n
            .checked_mul(unit)
            .ok_or_else(|| format!("too large; {hint}"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("too large; {hint}"))?;
    }
    if !number.is_empty() {
        return Err(format!("a number without a unit at the end; {hint}"));
    }
    Ok(total)
}

/// `[d.]hh:mm:ss`.
fn parse_timespan(text: &str) -> Option<Duration> {
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = parts[..] else { return None };
    if m >= 60 || s >= 60 {
        return None;
    }
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h.checked_mul(3600)?)?
        .checked_add(m * 60 + s)?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_each_mta_writes_them() {
        let d = |t| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(d("300"), Ok(300));
        assert_eq!(d("300s"), Ok(300));
        assert_eq!(d("5d"), Ok(5 * 86_400));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("00:15:00"), Ok(900));
        assert_eq!(d("2.00:00:00"), Ok(2 * 86_400));
        assert_eq!(d("1w"), Ok(7 * 86_400));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        assert_eq!(compact(Duration::from_millis(1500)), "1s500ms");
        assert!(d("15").is_ok());
        assert!(d("15x").unwrap_err().contains("unknown unit"));
        assert!(d("1h30").unwrap_err().contains("without a unit"));
        assert!(d("00:61:00").is_err());
        assert!(d("").is_err());
        assert!(
            d("18446744073709551615s1s")
                .unwrap_err()
                .contains("too large")
        );
        assert!(d("99999999999999.00:00:00").is_err());
        assert!(d("101y").is_err());
        assert!(d("40000d").unwrap_err().contains("100 years"));
    }

    #[test]
    fn set_names_the_known_parameters_when_one_is_unknown() {
        let specs = [Spec {
            name: "MessageRetryInterval",
            kind: Kind::Duration,
            default: "00:15:00",
            source: "",
            what: "",
        }];
        let mut p = Params::defaults("exchange-2016", &specs);
        assert_eq!(p.duration("MessageRetryInterval").as_secs(), 900);
        p.assign(&specs, "messageretryinterval=1m").unwrap();
        assert_eq!(p.duration("MessageRetryInterval").as_secs(), 60);
        assert_eq!(
            p.changed(),
            vec![("MessageRetryInterval", "1m".to_string())]
        );
        let unknown = p
            .assign(&specs, "RetryInterval=1m")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("knows: MessageRetryInterval"), "{unknown}");
        let bad = p
            .assign(&specs, "MessageRetryInterval=soon")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("write e.g."), "{bad}");
        assert!(p.assign(&specs, "MessageRetryInterval").is_err());
    }
}
