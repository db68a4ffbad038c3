//! Durations as scenario files write them, exactly as `docs/scenario-format.md` documents
//! them: a whole number and a unit, or several such from the largest unit to the smallest
//! (`"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"`), at most a year (`"365d"`).
//!
//! Written here rather than left to `humantime::parse_duration`, which also takes months
//! (`"5M"`), words (`"5 minutes"`), fractions (`"1.5h"`) and spans of centuries: each of
//! those passed the loader once and meant something other than the author thought.

use std::time::Duration;

/// The longest duration a scenario may hold.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// The units, largest first, with their length and their name in messages.
const UNITS: [(&str, Duration, &str); 5] = [
    ("d", Duration::from_secs(86_400), "days"),
    ("h", Duration::from_secs(3600), "hours"),
    ("m", Duration::from_secs(60), "minutes"),
    ("s", Duration::from_secs(1), "seconds"),
    ("ms", Duration::from_millis(1), "milliseconds"),
];

/// Parses a duration; the error says what is wrong and, where it can, what to write.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the duration is empty".to_string());
    }
    if let Ok(n) = trimmed.parse::<f64>() {
        return Err(format!(
            "`{trimmed}` needs a unit: write \"{n}s\" for {n} seconds"
        ));
    }
    let mut total = Duration::ZERO;
    let mut smallest_so_far: Option<usize> = None;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let spaced = rest[digits..].trim_start();
        let after_digits = if spaced.starts_with(|c: char| c.is_ascii_alphabetic()) {
            spaced
        } else {
            &rest[digits..]
        };
        let unit_len = after_digits
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (number, unit) = (&rest[..digits], &after_digits[..unit_len]);
        let next = after_digits[unit_len..].trim_start();
        if digits == 0 {
            return Err(format!(
                "`{trimmed}` is not a duration: a number must come before each unit"
            ));
        }
        if after_digits.starts_with(['.', ',']) {
            return Err(fraction(trimmed, number, after_digits));
        }
        if unit.is_empty() {
            return Err(format!(
                "`{trimmed}` is not a duration: `{number}` needs a unit"
            ));
        }
        let Some(index) = UNITS.iter().position(|(name, _, _)| *name == unit) else {
            return Err(unknown_unit(trimmed, unit));
        };
        if after_digits.len() != rest.len() - digits {
            return Err(format!(
                "`{trimmed}` is not a duration: write the unit right after the number, like \"{number}{unit}\""
            ));
        }
        if smallest_so_far.is_some_and(|previous| index <= previous) {
            return Err(format!(
                "`{trimmed}` is not a duration: write each unit once, the largest first, like \"1h30m\""
            ));
        }
        smallest_so_far = Some(index);
        let n: u32 = number
            .parse()
            .map_err(|_| format!("`{trimmed}` is longer than a year"))?;
        total = UNITS[index]
            .1
            .checked_mul(n)
            .and_then(|d| total.checked_add(d))
            .filter(|d| *d <= MAX)
            .ok_or_else(|| format!("`{trimmed}` is longer than a year (365d)"))?;
        rest = next;
    }
    Ok(total)
}

/// `5M`, `5 minutes`, `5sec`: what was meant, when it is clear.
fn unknown_unit(text: &str, unit: &str) -> String {
    let meant = match unit {
        "M" => Some("m (minutes; there are no months: write days, like \"30d\")"),
        "H" => Some("h"),
        "D" => Some("d"),
        "S" => Some("s"),
        "MS" | "Ms" => Some("ms"),
        "min" | "mins" | "minute" | "minutes" => Some("m"),
        "sec" | "secs" | "second" | "seconds" => Some("s"),
        "hr" | "hrs" | "hour" | "hours" => Some("h"),
        "day" | "days" => Some("d"),
        "msec" | "millis" | "milliseconds" => Some("ms"),
        "w" | "week" | "weeks" => Some("d (write weeks as days, like \"14d\")"),
        "y" | "year" | "years" | "month" | "months" | "mo" => {
            Some("d (a scenario's durations are at most \"365d\")")
        }
        _ => None,
    };
    match meant {
        Some(meant) => format!("`{text}` is not a duration: unknown unit `{unit}`; write {meant}"),
        None => format!(
            "`{text}` is not a duration: unknown unit `{unit}`; the units are ms, s, m, h and d"
        ),
    }
}

/// `1.5h`: the same length in whole units.
fn fraction(text: &str, whole: &str, after: &str) -> String {
    let digits: String = after[1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let unit: String = after[1 + digits.len()..]
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let value = format!("{whole}.{digits}").parse::<f64>().ok();
    let length = UNITS.iter().find(|(name, _, _)| *name == unit).map(|u| u.1);
    match (value, length) {
        (Some(value), Some(length)) if value * length.as_secs_f64() <= MAX.as_secs_f64() => {
            let whole_ms = (value * length.as_secs_f64() * 1000.0).round() as u64;
            format!(
                "`{text}` is not a duration: write whole numbers, like \"{}\"",
                show(Duration::from_millis(whole_ms))
            )
        }
        _ => format!("`{text}` is not a duration: write whole numbers, like \"1h30m\""),
    }
}

/// A duration as a scenario would write it: `"5m"`, `"1h30m"`, `"2d"`, `"250ms"`; what
/// [`parse`] reads back to the same duration (to the millisecond).
pub fn show(d: Duration) -> String {
    let mut left = d.as_millis();
    let mut out = String::new();
    for (name, length, _) in UNITS {
        let n = left / length.as_millis();
        if n > 0 {
            out.push_str(&format!("{n}{name}"));
            left -= n * length.as_millis();
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exactly_the_documented_grammar() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cases: &[(&str, Result<Duration, &str>)] = &[
            ("30s", Ok(s(30))),
            ("5m", Ok(s(300))),
            ("1h30m", Ok(s(5400))),
            ("1h 30m", Ok(s(5400))),
            ("2d", Ok(s(172_800))),
            ("250ms", Ok(ms(250))),
            ("1s500ms", Ok(ms(1500))),
            ("1d2h3m4s5ms", Ok(s(93_784) + ms(5))),
            (" 10s ", Ok(s(10))),
            ("0s", Ok(Duration::ZERO)),
            ("365d", Ok(MAX)),
            ("30", Err("needs a unit: write \"30s\"")),
            ("", Err("empty")),
            ("soon", Err("a number must come before each unit")),
            // what humantime took and the docs never said
            ("5M", Err("unknown unit `M`; write m (minutes")),
            ("5 minutes", Err("unknown unit `minutes`; write m")),
            ("1.5h", Err("write whole numbers, like \"1h30m\"")),
            ("0.5s", Err("write whole numbers, like \"500ms\"")),
            ("366d", Err("longer than a year (365d)")),
            ("2years", Err("unknown unit `years`")),
            ("2w", Err("write weeks as days")),
            ("99999999999999999999999s", Err("longer than a year")),
            ("30m1h", Err("the largest first")),
            ("1h1h", Err("the largest first")),
            ("1h30", Err("`30` needs a unit")),
            ("-5s", Err("a number must come before each unit")),
            ("5 m", Err("right after the number, like \"5m\"")),
            (
                "5 fortnights",
                Err("unknown unit `fortnights`; the units are ms, s, m, h and d"),
            ),
        ];
        for (text, expected) in cases {
            let got = parse(text);
            match (expected, &got) {
                (Ok(d), Ok(g)) => assert_eq!(g, d, "{text:?}"),
                (Err(fragment), Err(message)) => {
                    assert!(message.contains(fragment), "{text:?}: {message}")
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn shows_what_it_reads_back() {
        for ms in [
            0, 1, 999, 1000, 1500, 60_000, 5_400_000, 86_400_000, 93_784_005,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&show(d)), Ok(d), "{}", show(d));
        }
        assert_eq!(show(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
    }
}
