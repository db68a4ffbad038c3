//! Sizes, and ranges of numbers and of farm time, as scenario files write them.

use std::time::Duration;

use crate::scenario::duration::{parse as parse_duration, show};
use crate::scenario::model::{AttemptRange, TimeRange};

/// Parses `"35MiB"`, `"10MB"`, `"512KiB"` or `"1000"` into bytes.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let starts_with_digit = trimmed.starts_with(|c: char| c.is_ascii_digit());
    match trimmed.parse::<bytesize::ByteSize>() {
        Ok(size) if starts_with_digit => Ok(size.as_u64()),
        _ => Err(format!("`{trimmed}` is not a size")),
    }
}

/// Parses `"3"`, `"<3"`, `"<=3"`, `">3"`, `">=3"` or `"2-4"`: a range of numbers counted
/// from 1 (attempts, connections, messages); `noun` names what is counted in the errors.
pub(crate) fn numbers(text: &str, noun: &str) -> Result<AttemptRange, String> {
    let none = format!("no {noun} is in this range (the first {noun} is 1)");
    let text = text.trim();
    let number = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a number is missing".to_string());
        }
        s.parse::<u32>()
            .map_err(|_| format!("`{s}` is not a whole number"))
    };
    let (min, max) = if let Some(n) = text.strip_prefix("<=") {
        (1, number(n)?)
    } else if let Some(n) = text.strip_prefix(">=") {
        (number(n)?, u32::MAX)
    } else if let Some(n) = text.strip_prefix('<') {
        (1, number(n)?.saturating_sub(1))
    } else if let Some(n) = text.strip_prefix('>') {
        let after = number(n)?.checked_add(1);
        (after.ok_or_else(|| none.clone())?, u32::MAX)
    } else if let Some((a, b)) = text.split_once('-') {
        let (a, b) = (number(a)?, number(b)?);
        if a > b {
            return Err(format!("{a} is bigger than {b}; write \"{b}-{a}\""));
        }
        (a, b)
    } else {
        let n = number(text)?;
        (n, n)
    };
    if max < 1 || min > max {
        return Err(none);
    }
    Ok(AttemptRange {
        min: min.max(1),
        max,
    })
}

/// Parses a half-open range of farm time: `"<10m"`, `">=1h"` or `"10m-1h"`. The error is
/// why not, and a hint when there is a better one than the general one.
pub(crate) fn time(text: &str) -> Result<TimeRange, (String, Option<String>)> {
    let text = text.trim();
    let at = |s: &str| parse_duration(s).map_err(|why| (why, None));
    if let Some(rest) = text.strip_prefix("<=") {
        let rest = rest.trim();
        return Err((
            "time ranges take `<` and `>=`, not `<=`".to_string(),
            Some(format!(
                "time ranges are half-open, so that \"<{rest}\" and \">={rest}\" split the run with no overlap: write time = \"<{rest}\" for the time before {rest}"
            )),
        ));
    }
    if let Some(rest) = text.strip_prefix(">=") {
        return Ok(TimeRange {
            from: at(rest)?,
            until: None,
        });
    }
    if let Some(rest) = text.strip_prefix('>') {
        let rest = rest.trim();
        return Err((
            "time ranges take `<` and `>=`, not `>`".to_string(),
            Some(format!(
                "time ranges are half-open, so that \"<{rest}\" and \">={rest}\" split the run with no overlap: write time = \">={rest}\" for the time from {rest} on"
            )),
        ));
    }
    if let Some(rest) = text.strip_prefix('<') {
        let until = at(rest)?;
        if until.is_zero() {
            return Err((
                "no time is before 0".to_string(),
                Some("write a later end, like time = \"<10m\"".to_string()),
            ));
        }
        return Ok(TimeRange {
            from: Duration::ZERO,
            until: Some(until),
        });
    }
    if let Some((a, b)) = text.split_once('-') {
        let (from, until) = (at(a)?, at(b)?);
        let (a, b) = (a.trim(), b.trim());
        if from > until {
            return Err((
                format!("{a} is after {b}"),
                Some(format!("write the earlier time first: time = \"{b}-{a}\"")),
            ));
        }
        if from == until {
            return Err((
                format!("no time is from {a} and before {b}"),
                Some(format!(
                    "a range includes its start but not its end, so make the end later, like time = \"{a}-{}\"",
                    show(from + Duration::from_secs(60))
                )),
            ));
        }
        return Ok(TimeRange {
            from,
            until: Some(until),
        });
    }
    match parse_duration(text) {
        Ok(_) => Err((
            "`time` is a range, not a single time".to_string(),
            Some(format!(
                "write time = \"<{text}\" (before {text}) or time = \">={text}\" (from {text} on)"
            )),
        )),
        Err(why) => Err((why, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("35MiB", Some(35 * 1024 * 1024)),
            ("10MB", Some(10_000_000)),
            ("512KiB", Some(512 * 1024)),
            ("512 KiB", Some(512 * 1024)),
            ("1000", Some(1000)),
            ("64mib", Some(64 * 1024 * 1024)),
            ("1.5KB", Some(1500)),
            ("0", Some(0)),
            ("64 megs", None),
            ("-5MB", None),
            ("MB", None),
            ("", None),
            ("lots", None),
        ];
        for (text, expected) in cases {
            assert_eq!(size(text).ok(), *expected, "{text:?}");
        }
    }

    #[test]
    fn attempt_ranges() {
        let r = |min, max| Ok(AttemptRange { min, max });
        let cases: &[(&str, Result<AttemptRange, &str>)] = &[
            ("3", r(3, 3)),
            ("<3", r(1, 2)),
            ("<=3", r(1, 3)),
            (">3", r(4, u32::MAX)),
            (">=3", r(3, u32::MAX)),
            ("2-4", r(2, 4)),
            (" 2 - 4 ", r(2, 4)),
            ("< 3", r(1, 2)),
            (">=1", r(1, u32::MAX)),
            ("1", r(1, 1)),
            ("0", Err("no attempt")),
            ("<1", Err("no attempt")),
            ("0-2", r(1, 2)),
            ("4-2", Err("write \"2-4\"")),
            ("", Err("missing")),
            ("<", Err("missing")),
            ("three", Err("not a whole number")),
            ("=3", Err("not a whole number")),
            ("2-", Err("missing")),
            ("-2", Err("missing")),
            ("1.5", Err("not a whole number")),
            (">4294967295", Err("no attempt")),
        ];
        for (text, expected) in cases {
            let got = numbers(text, "attempt");
            match (expected, &got) {
                (Ok(range), Ok(g)) => assert_eq!(g, range, "{text:?}"),
                (Err(fragment), Err(message)) => {
                    assert!(message.contains(fragment), "{text:?}: {message}")
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn time_ranges_are_half_open() {
        let r = |from, until: Option<u64>| {
            Ok(TimeRange {
                from: secs(from),
                until: until.map(secs),
            })
        };
        let cases: &[(&str, Result<TimeRange, &str>)] = &[
            ("<10m", r(0, Some(600))),
            ("< 10m", r(0, Some(600))),
            (">=1h", r(3600, None)),
            (">=0s", r(0, None)),
            ("10m-1h", r(600, Some(3600))),
            (" 0s - 30s ", r(0, Some(30))),
            ("1h30m-2h", r(5400, Some(7200))),
            ("<=10m", Err("not `<=`")),
            (">1h", Err("not `>`")),
            ("1h-10m", Err("1h is after 10m")),
            ("1h-1h", Err("no time is from 1h and before 1h")),
            ("<0s", Err("no time is before 0")),
            ("10m", Err("a range, not a single time")),
            ("<10", Err("needs a unit")),
            ("<soon", Err("is not a duration")),
            ("", Err("empty")),
            ("-5m", Err("empty")),
        ];
        for (text, expected) in cases {
            let got = time(text);
            match (expected, &got) {
                (Ok(range), Ok(g)) => assert_eq!(g, range, "{text:?}"),
                (Err(fragment), Err((message, _))) => {
                    assert!(message.contains(fragment), "{text:?}: {message}")
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
        // and the hints say what to write instead
        let hint = |text: &str| time(text).unwrap_err().1.unwrap();
        assert!(
            hint("<=10m").contains("time = \"<10m\""),
            "{}",
            hint("<=10m")
        );
        assert!(hint(">1h").contains("time = \">=1h\""), "{}", hint(">1h"));
        assert!(hint("1h-10m").contains("\"10m-1h\""), "{}", hint("1h-10m"));
        assert!(hint("10m").contains("\">=10m\""), "{}", hint("10m"));
    }
}
