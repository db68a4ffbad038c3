//! `mxfarm simulate` as a user runs it: the text and JSON outputs, `--compare`, a schedule
//! file, a file of messages, and the errors that say what to write instead.

use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mxfarm"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn the_default_output_tells_the_senders_side_then_the_farms() {
    let text = stdout(&simulate(&[
        "greylist",
        "--to",
        "bob@greylist.test",
        "--set",
        "maximal_backoff_time=1h",
    ]));
    let sender = text.find("== the sender's side ==").unwrap();
    let transcript = text.find("== the farm's transcript ==").unwrap();
    let report = text.find("== the farm's report ==").unwrap();
    assert!(sender < transcript && transcript < report, "{text}");
    assert!(
        text.contains("sender postfix (maximal_backoff_time=1h)"),
        "{text}"
    );
    // Greylisted on both hosts at once, then through at the first retry, 5 minutes on.
    assert!(
        text.contains("= bob@greylist.test: delivered +5m00s via mx1"),
        "{text}"
    );
    assert!(
        text.contains("delivery <me@sender.test> -> <bob@greylist.test>"),
        "{text}"
    );
    assert!(text.contains("retry report: 1 delivery"), "{text}");
}

/// postconf(5), delay_warning_time: the warning goes out after the first try that
/// leaves the message deferred past that age: with the default backoff, the try at
/// 4h50m (5, 10, 20, 40, 80 minutes, then 4000 s on each 300 s scan).
#[test]
fn postfix_warns_once_after_the_first_deferral_past_delay_warning_time() {
    let text = stdout(&simulate(&[
        "aol",
        "--to",
        "full-bob@aol.test",
        "--set",
        "delay_warning_time=4h",
        "--show",
        "sender",
    ]));
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("delay warning to"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].trim_start().starts_with("+4h50m00s"), "{text}");
    assert!(warnings[0].contains("more than 4 hour(s)"), "{text}");
}

#[test]
fn json_holds_the_sender_the_transcript_and_the_report() {
    let out = stdout(&simulate(&["aol", "--to", "gone@aol.test", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &json["sender"]["messages"][0];
    assert_eq!(m["recipients"][0]["fate"]["outcome"], "bounced");
    assert_eq!(json["sender"]["summary"]["bounced"], 1);
    assert_eq!(m["notices"][0]["kind"], "bounce");
    assert!(
        json["transcript"].is_object() || json["transcript"].is_array(),
        "{json}"
    );
    assert!(json["report"].is_object(), "{json}");
}

#[test]
fn compare_puts_each_variant_on_a_line_of_its_own() {
    let out = stdout(&simulate(&[
        "aol",
        "--sender",
        "exchange-2016",
        "--to",
        "full-bob@aol.test",
        "--compare",
        "MessageRetryInterval=1m",
        "MessageRetryInterval=15m",
        "exim",
    ]));
    let row = |label: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in\n{out}"));
        line[label.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let fast = row("exchange-2016 (MessageRetryInterval=1m)");
    let slow = row("exchange-2016 (MessageRetryInterval=15m)");
    let exim = row("exim ");
    // delivered, bounced, queued, p50 ... then attempts as median-max.
    assert_eq!(fast[0], "1");
    // A mailbox full for 6 hours: every minute is 361 tries, every 15 minutes 25.
    assert_eq!(fast[7], "361-361", "{out}");
    assert_eq!(slow[7], "25-25", "{out}");
    assert_ne!(exim[7], slow[7], "{out}");
}

#[test]
fn a_schedule_file_is_a_custom_sender_and_its_mistakes_are_placed() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("queue.toml");
    std::fs::write(&good, "retry = \"10m\"\ngive-up-after = \"1h\"\n").unwrap();
    let out = stdout(&simulate(&[
        "aol",
        "--sender",
        good.to_str().unwrap(),
        "--to",
        "full-bob@aol.test",
        "--show",
        "sender",
    ]));
    assert!(out.contains("bounced +1h00m00s: gave up after 1h"), "{out}");
    assert!(out.contains("+50m00s"), "every 10 minutes: {out}");

    // --compare starts the base model's variants from the file, not custom's defaults.
    let compared = stdout(&simulate(&[
        "aol",
        "--sender",
        good.to_str().unwrap(),
        "--to",
        "full-bob@aol.test",
        "--compare",
        "custom",
        "give-up-after=12h",
    ]));
    let rows: Vec<&str> = compared
        .lines()
        .filter(|l| l.starts_with("custom"))
        .collect();
    assert_eq!(rows.len(), 2, "{compared}");
    assert!(
        rows[0].split_whitespace().nth(4) == Some("1"),
        "bounced after 1h: {compared}"
    );
    assert!(
        rows[1].contains("give-up-after=12h") && rows[1].split_whitespace().nth(3) == Some("1"),
        "{compared}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "retry = \"10m\"\ngive_up = \"1h\"\n").unwrap();
    let err = stderr(&simulate(&[
        "aol",
        "--sender",
        bad.to_str().unwrap(),
        "--to",
        "a@aol.test",
    ]));
    assert!(err.contains("bad.toml:2:1"), "{err}");
    assert!(err.contains("give-up-after"), "{err}");
}

#[test]
fn messages_come_from_a_file_with_their_arrival_times() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.txt");
    std::fs::write(
        &file,
        "me@sender.test alice@aol.test\n<> bob@aol.test +1h  # a bounce, an hour later\n",
    )
    .unwrap();
    let out = stdout(&simulate(&[
        "aol",
        "--messages-file",
        file.to_str().unwrap(),
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let messages = json["sender"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["from"], "");
    let arrived =
        messages[1]["arrived_ms"].as_u64().unwrap() - messages[0]["arrived_ms"].as_u64().unwrap();
    assert_eq!(arrived, 3_600_000);
}

#[test]
fn mistakes_say_what_to_write_instead() {
    let err = stderr(&simulate(&[
        "aol",
        "--sender",
        "qmail",
        "--to",
        "a@aol.test",
    ]));
    assert!(
        err.contains("no sender model \"qmail\"") && err.contains("exchange-2016"),
        "{err}"
    );
    let err = stderr(&simulate(&[
        "aol",
        "--set",
        "backoff=1h",
        "--to",
        "a@aol.test",
    ]));
    assert!(
        err.contains("maximal_backoff_time") && err.contains("--parameters"),
        "{err}"
    );
    let err = stderr(&simulate(&[
        "aol",
        "--set",
        "maximal_backoff_time=soon",
        "--to",
        "a@aol.test",
    ]));
    assert!(err.contains("write e.g."), "{err}");
    let err = stderr(&simulate(&["aol"]));
    assert!(err.contains("--to alice@aol.test"), "{err}");
}

#[test]
fn parameters_lists_every_parameter_with_its_default_and_source() {
    let out = stdout(&simulate(&["--sender", "exim", "--parameters"]));
    assert!(
        out.contains("retry = F,2h,15m; G,16h,1h,1.5; F,4d,6h"),
        "{out}"
    );
    assert!(out.contains("configure.default"), "{out}");
    let out = stdout(&simulate(&["--sender", "exchange-2016", "--parameters"]));
    assert!(out.contains("MessageRetryInterval = 00:15:00"), "{out}");
}

#[test]
fn help_shows_examples() {
    let out = stdout(&simulate(&["--help"]));
    assert!(
        out.contains("Examples:") && out.contains("--compare"),
        "{out}"
    );
}
