//! The `mxfarm` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::{greeted, sigterm, summary_until_ready, terminate};

fn mxfarm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mxfarm"))
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_shows_examples() {
    let out = mxfarm().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("mxfarm run"), "{help}");
    let out = mxfarm().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--bind <HOST=ADDR>"), "{help}");
    assert!(help.contains("--journal <FILE>"), "{help}");
}

#[test]
fn scenarios_lists_the_embedded_ones() {
    let out = mxfarm().arg("scenarios").output().unwrap();
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.starts_with("aol "), "{list}");
}

#[test]
fn check_passes_every_shipped_scenario() {
    let dir = format!("{}/scenarios", env!("CARGO_MANIFEST_DIR"));
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(!files.is_empty());
    let out = mxfarm().arg("check").args(&files).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: "), "{stdout}");
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let out = mxfarm()
        .current_dir(fixture(""))
        .args([
            "check",
            "broken/many_problems.toml",
            "broken/unknown_key_typo.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("check_broken_files", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_names_a_missing_file() {
    let out = mxfarm()
        .args(["check", "no-such-file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-file.toml"), "{stderr}");
}

#[test]
fn run_rejects_an_unknown_scenario_name() {
    let out = mxfarm().args(["run", "hotmale"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aol"), "lists the embedded names: {stderr}");
}

#[tokio::test]
async fn run_serves_the_default_scenario_and_writes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let mut child = mxfarm()
        .args(["run", "--journal"])
        .arg(&journal)
        .args([
            "--bind",
            "mx1=127.0.0.1:0",
            "--bind",
            "mx2=127.0.0.1:0",
            "--bind",
            "mx3=127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The summary names every host with its bound address, one line each.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut hosts: Vec<(String, SocketAddr)> = Vec::new();
    let mut summary = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        summary.push_str(&line);
        summary.push('\n');
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"host") {
            hosts.push((words[1].to_string(), words[2].parse().unwrap()));
        }
        if line.starts_with("Ready.") {
            break;
        }
    }
    assert_eq!(hosts.len(), 3, "{summary}");
    assert!(summary.contains("domain aol.test"), "{summary}");

    // mx3 accepts ordinary recipients.
    let mx3 = hosts.iter().find(|(n, _)| n == "mx3").unwrap().1;
    let mut c = greeted(mx3).await;
    c.ehlo("client.test").await;
    let sent = c
        .transaction(
            "me@example.test",
            &["alice@aol.test"],
            "Subject: cli\r\n\r\nhi\r\n",
        )
        .await;
    assert!(sent.delivered(), "{}", c.conversation());
    c.send("QUIT\r\n").await;
    c.expect_code(221).await;

    // SIGTERM shuts the farm down cleanly.
    let pid = child.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("accepted as message"),
        "one log line per transaction: {logs}"
    );

    let written = std::fs::read_to_string(&journal).unwrap();
    let events: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"farm-started"), "{written}");
    assert!(kinds.contains(&"message-accepted"), "{written}");
    assert_eq!(kinds.last(), Some(&"connection-closed"), "{written}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {seqs:?}"
    );
}

#[test]
fn a_ca_written_once_signs_every_run_and_ca_out_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("farm-ca");
    let out = mxfarm().arg("ca").arg(&ca_dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    assert!(ca_dir.join("ca-key.pem").exists());

    let scenario = dir.path().join("tls.toml");
    std::fs::write(
        &scenario,
        "name = \"tls\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\ntls = \"valid\"\n",
    )
    .unwrap();
    let written = dir.path().join("out.pem");
    let mut child = mxfarm()
        .arg("run")
        .arg(&scenario)
        .arg("--ca")
        .arg(&ca_dir)
        .arg("--ca-out")
        .arg(&written)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let summary = summary_until_ready(&mut child);
    assert!(summary.contains("STARTTLS valid"), "{summary}");
    assert!(summary.contains("CA certificate -> "), "{summary}");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), ca_pem);
    assert!(terminate(child).status.success());
}

#[test]
fn run_with_a_missing_ca_says_how_to_make_one() {
    let out = mxfarm()
        .args(["run", "aol", "--ca", "/nonexistent/farm-ca"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mxfarm ca DIR"), "{stderr}");
}

/// A journal file as `mxfarm run --journal` writes it, of one greylisted delivery that
/// gets through on its second attempt (the greylisting says how long to wait, so that
/// a sender coming back sooner is blamed).
async fn greylisted_journal(dir: &std::path::Path) -> std::path::PathBuf {
    greylisted_journal_with_waits(dir, &[360, 360]).await
}

/// The same, with the sender waiting these many seconds after each attempt.
async fn greylisted_journal_with_waits(dir: &std::path::Path, waits: &[u64]) -> std::path::PathBuf {
    use mxfarm::{Farm, Scenario};
    let scenario = Scenario::from_toml(
        "grey.toml",
        r#"
name = "grey"
[[domain]]
name = "grey.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = { reply = "450 4.2.0 <{recipient}>: Greylisted for {remaining} seconds" } }
"#,
    )
    .unwrap();
    let farm = Farm::start_ephemeral(scenario).await.unwrap();
    for wait in waits {
        let mut c = greeted(farm.addr("mx1")).await;
        c.ehlo("client.test").await;
        c.transaction("me@sender.test", &["bob@grey.test"], "Subject: x\r\n\r\n")
            .await;
        c.quit().await;
        farm.advance(std::time::Duration::from_secs(*wait));
    }
    let path = dir.join(format!("journal-{}.jsonl", waits.len()));
    let lines: Vec<String> = farm
        .journal()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    farm.shutdown().await;
    path
}

#[tokio::test]
async fn transcript_reads_a_journal_file_and_check_compares_it_with_a_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let journal = greylisted_journal(dir.path()).await;
    let out = mxfarm()
        .args(["transcript", "--granularity", "minutes"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("cli_transcript_of_a_greylisted_delivery", text);

    // The same behaviour: --check passes.
    let expected = dir.path().join("expected.txt");
    std::fs::write(&expected, &text).unwrap();
    let same = mxfarm()
        .args(["transcript", "--granularity", "minutes", "--check"])
        .arg(&expected)
        .arg(&journal)
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );

    // Changed behaviour (the golden file says it got through at once): a diff, exit 1.
    std::fs::write(
        &expected,
        text.replace("delivered after 2 attempts", "delivered after 1 attempt"),
    )
    .unwrap();
    let changed = mxfarm()
        .args(["transcript", "--granularity", "minutes", "--check"])
        .arg(&expected)
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(changed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(stderr.contains("-  delivered after 1 attempt"), "{stderr}");
    assert!(stderr.contains("+  delivered after 2 attempts"), "{stderr}");
    // The command it suggests writes what this check compares: minutes, not seconds.
    let accept = format!(
        "accept it with `mxfarm transcript {} --granularity minutes > {}`",
        journal.display(),
        expected.display()
    );
    assert!(stderr.contains(&accept), "{stderr}");
    let missing = dir.path().join("missing.txt");
    let out = mxfarm()
        .args(["transcript", "--granularity", "minutes", "--check"])
        .arg(&missing)
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let create = format!(
        "create it with `mxfarm transcript {} --granularity minutes > {}`",
        journal.display(),
        missing.display()
    );
    assert!(stderr.contains(&create), "{stderr}");

    let json = mxfarm()
        .args(["transcript", "--json"])
        .arg(&journal)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["deliveries"][0]["outcome"]["result"], "delivered");
}

#[test]
fn transcript_names_a_broken_journal_line() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("broken.jsonl");
    std::fs::write(&journal, "{\"seq\":1}\nnot json\n").unwrap();
    let out = mxfarm().arg("transcript").arg(&journal).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jsonl:1"), "{stderr}");
}

#[tokio::test]
async fn report_lists_findings_and_exits_2_on_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let journal = greylisted_journal(dir.path()).await;
    let out = mxfarm().arg("report").arg(&journal).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    insta::assert_snapshot!("cli_report_of_a_patient_sender", text);

    // A sender that came back after 30 seconds, before the greylisting delay: an early
    // retry, which is a problem.
    let early = greylisted_journal_with_waits(dir.path(), &[30, 360, 360]).await;
    let out = mxfarm()
        .args(["report", "--json"])
        .arg(&early)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.to_string().contains("early-retry"), "{report}");
}

/// A stdout whose reader has already gone, as `| head -1` leaves it once head has read its
/// line and exited: every write to it fails with EPIPE.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

/// Runs `command` with a closed stdout; checks that it did not panic and returns its exit
/// status.
fn without_a_reader(command: &mut Command) -> Option<i32> {
    let out = command
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    out.status.code()
}

#[tokio::test]
async fn a_reader_that_goes_early_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let journal = greylisted_journal(dir.path()).await;
    assert_eq!(without_a_reader(mxfarm().arg("reference")), Some(0));
    assert_eq!(without_a_reader(mxfarm().arg("scenarios")), Some(0));
    assert_eq!(without_a_reader(mxfarm().args(["check", "aol"])), Some(0));
    let ca = dir.path().join("farm-ca");
    assert_eq!(without_a_reader(mxfarm().arg("ca").arg(&ca)), Some(0));
    let transcript = || {
        let mut command = mxfarm();
        command.arg("transcript").arg(&journal);
        command
    };
    assert_eq!(without_a_reader(&mut transcript()), Some(0));
    assert_eq!(without_a_reader(transcript().arg("--json")), Some(0));
    assert_eq!(
        without_a_reader(mxfarm().arg("report").arg(&journal)),
        Some(0)
    );
    // The report's verdict stands, however much of it was read.
    let early = greylisted_journal_with_waits(dir.path(), &[30, 360, 360]).await;
    assert_eq!(
        without_a_reader(mxfarm().arg("report").arg(&early)),
        Some(2)
    );
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `mxfarm run | head -1` once head has gone: the summary is lost, and nothing else.
#[tokio::test]
async fn run_serves_when_stdout_has_no_reader() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let scenario = dir.path().join("one.toml");
    std::fs::write(
        &scenario,
        format!("name = \"one\"\n[[host]]\nname = \"mx1\"\nlisten = \"{addr}\"\n"),
    )
    .unwrap();
    let mut child = mxfarm()
        .arg("run")
        .arg(&scenario)
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + mxfarm::testing::GUARD;
    let stream = loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            break stream;
        }
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < deadline,
            "the farm never listened: {exited:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut c = mxfarm::testing::SmtpClient::over(stream);
    c.greeting().await;
    c.ehlo("client.test").await;
    let sent = c
        .transaction(
            "me@example.test",
            &["bob@example.test"],
            "Subject: x\r\n\r\n",
        )
        .await;
    assert!(sent.delivered(), "{}", c.conversation());
    c.quit().await;
    let out = terminate(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `command` to its end, or kills it after the guard: a farm that should have refused
/// to start but serves instead fails the test rather than hanging it.
fn run_to_end(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + mxfarm::testing::GUARD;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// A scenario file of one host on a free port, in `dir`.
fn one_host_scenario(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("one.toml");
    std::fs::write(
        &path,
        "name = \"one\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    path
}

/// A script that waits for "Ready." must not get it from a farm that then fails.
#[test]
fn run_fails_before_ready_when_the_journal_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = one_host_scenario(dir.path());
    let out = run_to_end(
        mxfarm()
            .arg("run")
            .arg(&scenario)
            .arg("--journal")
            .arg(dir.path().join("no-such-dir/journal.jsonl")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the journal to"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing on stdout"
    );
}

#[test]
fn run_refuses_to_write_its_journal_over_its_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = one_host_scenario(dir.path());
    let text = std::fs::read_to_string(&scenario).unwrap();
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&scenario, &link).unwrap();
    for journal in [
        scenario.clone(),
        dir.path().join(".").join("one.toml"),
        link.clone(),
    ] {
        let out = run_to_end(
            mxfarm()
                .arg("run")
                .arg(&scenario)
                .arg("--journal")
                .arg(&journal),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {stderr}",
            journal.display()
        );
        assert!(stderr.contains("is the scenario file"), "{stderr}");
        assert!(
            stderr.contains("--journal "),
            "says what to write: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert_eq!(std::fs::read_to_string(&scenario).unwrap(), text);
    }
    // From another directory, by a relative path.
    let out = run_to_end(
        mxfarm()
            .current_dir(dir.path())
            .arg("run")
            .arg(&link)
            .args(["--journal", "one.toml"]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&scenario).unwrap(), text);
}

/// A journal without events (an empty file, blank lines) is said to be empty: the
/// transcript is empty with a note, and the report does not pass.
#[test]
fn an_empty_journal_is_said_to_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")] {
        let journal = dir.path().join(name);
        std::fs::write(&journal, text).unwrap();
        let empty = format!("the journal {} holds no events", journal.display());
        let out = mxfarm().arg("transcript").arg(&journal).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains(&empty), "{stderr}");
        assert!(stderr.contains("mxfarm run --journal"), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        for json in [false, true] {
            let mut command = mxfarm();
            command.arg("report").arg(&journal);
            if json {
                command.arg("--json");
            }
            let out = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains(&empty), "{stderr}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        }
    }
}

/// A journal of a farm nobody reached (only its farm-started event) does not pass a CI
/// job either: the report fails, saying what to check.
#[tokio::test]
async fn a_journal_without_connections_does_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let farm = mxfarm::Farm::start_ephemeral(mxfarm::Scenario::embedded("aol").unwrap())
        .await
        .unwrap();
    let journal = dir.path().join("quiet.jsonl");
    let lines: Vec<String> = farm
        .journal()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "only farm-started");
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    farm.shutdown().await;
    let out = mxfarm().arg("report").arg(&journal).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("records no connection"), "{stderr}");
    assert!(stderr.contains("startup summary"), "{stderr}");
    let out = mxfarm().arg("transcript").arg(&journal).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("records no connection"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// A farm killed mid-write leaves a last line cut short: the views read the events before
/// it and warn; a broken line before the last stays an error.
#[tokio::test]
async fn a_torn_last_line_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let journal = greylisted_journal(dir.path()).await;
    let whole = std::fs::read_to_string(&journal).unwrap();
    let lines = whole.lines().count();
    let torn = dir.path().join("torn.jsonl");
    std::fs::write(
        &torn,
        format!("{whole}{{\"seq\":999,\"ms\":12,\"event\":\"rep"),
    )
    .unwrap();
    for command in ["transcript", "report"] {
        let expected = mxfarm().arg(command).arg(&journal).output().unwrap();
        let out = mxfarm().arg(command).arg(&torn).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        assert_eq!(out.stdout, expected.stdout, "{command}: {stderr}");
        let warning = format!(
            "the last line ({}) of {} is incomplete",
            lines + 1,
            torn.display()
        );
        assert!(stderr.contains(&warning), "{command}: {stderr}");
    }
    std::fs::write(
        &torn,
        format!("{{\"seq\":999,\"ms\":12,\"event\":\"rep\n{whole}"),
    )
    .unwrap();
    let out = mxfarm().arg("transcript").arg(&torn).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("torn.jsonl:1: not a journal event"),
        "{stderr}"
    );
}

/// SIGTERM ends `mxfarm run` within its `--shutdown-grace` although a client is stuck in
/// the TLS handshake, whose command timeout (an hour here) would otherwise hold the exit;
/// the journal file says how that session ended.
#[tokio::test]
async fn sigterm_ends_the_farm_promptly_with_a_client_stuck_in_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let scenario = dir.path().join("stuck.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"stuck\"\n[[host]]\nname = \"mx1\"\nlisten = \"{addr}\"\ntls = \"valid\"\n\
             [host.limits]\ncommand-timeout = \"1h\"\n"
        ),
    )
    .unwrap();
    let journal = dir.path().join("journal.jsonl");
    let mut child = mxfarm()
        .arg("run")
        .arg(&scenario)
        .arg("--journal")
        .arg(&journal)
        .args(["--shutdown-grace", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    summary_until_ready(&mut child);
    let mut c = greeted(addr).await;
    c.ehlo("client.test").await;
    c.send("STARTTLS\r\n").await;
    c.expect("220 2.0.0 Ready to start TLS").await;
    let mut stream = c.into_inner();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"\x16\x03\x01\x00\xa5\x01")
        .await
        .unwrap();

    sigterm(&child);
    // Real time, bounded, only to see the process go.
    let deadline = std::time::Instant::now() + mxfarm::testing::GUARD;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited.is_some_and(|status| status.success()),
        "the farm did not end within {:?} of SIGTERM: {exited:?}\n{stderr}",
        mxfarm::testing::GUARD
    );
    let written = std::fs::read_to_string(&journal).unwrap();
    let closed = written
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "connection-closed")
        .unwrap_or_else(|| panic!("no connection-closed in\n{written}"));
    assert_eq!(
        closed["reason"],
        "farm shut down: the TLS handshake was still under way when the grace period ended",
        "{written}"
    );
    drop(stream);
}

/// `--hosts-from` puts every host at an address of its own on one port, the DNS gives
/// those addresses, and `--add-addresses` leaves addresses an interface has alone (here
/// loopback's: the `ip` command it would need cannot even run).
#[tokio::test]
async fn hosts_from_gives_each_host_its_own_address_on_one_port() {
    let port = free_port();
    let dns_port = free_port();
    let mut child = mxfarm()
        .args(["run", "aol", "--add-addresses", "--hosts-from"])
        .arg(format!("127.0.0.31:{port}"))
        .arg("--dns")
        .arg(format!("127.0.0.31:{dns_port}"))
        .env("MXFARM_IP_COMMAND", "/nonexistent/ip")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let summary = summary_until_ready(&mut child);
    for (host, ip) in [
        ("mx1", "127.0.0.31"),
        ("mx2", "127.0.0.32"),
        ("mx3", "127.0.0.33"),
    ] {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        assert!(
            summary.contains(&format!("host {host}    {addr}")),
            "{summary}"
        );
        let a_record = format!(
            "mx-aol{}.mail.gm0.yahoodns.test.\t60\tIN\tA\t{ip}",
            &host[2..]
        );
        assert!(summary.contains(&a_record), "{summary}");
        let mut c = greeted(addr).await;
        c.quit().await;
    }
    assert!(
        !summary.contains("--add-addresses"),
        "nothing added: {summary}"
    );
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DNS beyond loopback that hands out a loopback host's address sends senders elsewhere
/// to their own loopback: the farm says so at start.
#[tokio::test]
async fn a_loopback_host_behind_a_wider_dns_is_warned_about() {
    let child = mxfarm()
        .args([
            "run",
            "aol",
            "--bind",
            "mx1=127.0.0.1:0",
            "--bind",
            "mx2=127.0.0.1:0",
        ])
        .arg("--hosts-from")
        .arg(format!("0.0.0.0:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let refused = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--bind HOST=0.0.0.0:PORT"), "{stderr}");

    let mut child = mxfarm()
        .args([
            "run",
            "aol",
            "--bind",
            "mx1=127.0.0.1:0",
            "--bind",
            "mx2=127.0.0.1:0",
        ])
        .args(["--bind", "mx3=0.0.0.0:0", "--dns", "0.0.0.0:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    summary_until_ready(&mut child);
    let out = terminate(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: host mx1 listens on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: host mx2 listens on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("host mx3 listens"), "{stderr}");
}

/// `--threads N` gives the runtime N worker threads, and the farm runs on one without it
/// (tokio's own default would be one per core). Counted by name in /proc once the farm is
/// ready: nothing it does at startup starts one of tokio's blocking threads, which bear
/// the same name.
#[cfg(target_os = "linux")]
#[test]
fn run_has_one_runtime_thread_unless_given_more() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = one_host_scenario(dir.path());
    for (args, expected) in [(&[][..], 1), (&["--threads", "3"][..], 3)] {
        let mut child = mxfarm()
            .arg("run")
            .arg(&scenario)
            .args(args)
            .env_remove("MXFARM_THREADS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        summary_until_ready(&mut child);
        let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
        let workers = tasks
            .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count();
        let out = terminate(child);
        assert!(out.status.success(), "{:?}", out.status);
        assert_eq!(workers, expected, "runtime threads with {args:?}");
    }
}
