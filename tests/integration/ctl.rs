//! `mxfarm ctl`, the binary, against a farm's API on an ephemeral port: what a shell CI
//! does to test a sender in another language. Its `transcript --check` passes and fails
//! as `mxfarm transcript --check` does on the same farm's journal file.

use std::path::Path;

use mxfarm::journal::JournalFileOptions;
use mxfarm::{Farm, FarmOptions, Scenario};
use tokio::process::Command;

use crate::api::{GREYLIST, Http, send};

/// What a run of the binary gave: its exit code, stdout and stderr.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn mxfarm(args: &[&str]) -> Ran {
    let output = Command::new(env!("CARGO_BIN_EXE_mxfarm"))
        .args(args)
        .env_remove("MXFARM_API")
        .env_remove("MXFARM_API_TOKEN")
        .output()
        .await
        .expect("mxfarm runs");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ctl(http: &Http, args: &[&str]) -> Ran {
    let url = http.api.url();
    let mut all = vec!["ctl", "--api", url.as_str()];
    all.extend_from_slice(args);
    mxfarm(&all).await
}

/// The diff and the verdict of a failed check, without the lines that name the two sides
/// and the command that accepts the change: what must be the same for both commands.
fn verdict(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++") && !l.contains("help:"))
        .map(|l| l.split(" differs from ").next().unwrap_or(l))
        .collect()
}

/// `ctl transcript --check GOLDEN` on the running farm, and `transcript JOURNAL --check
/// GOLDEN` on its journal file, both at minutes.
async fn both_check(http: &Http, journal: &str, golden: &str) -> (Ran, Ran) {
    let check = ["--granularity", "minutes", "--check", golden];
    let by_ctl = ctl(http, &[&["transcript"][..], &check].concat()).await;
    let by_file = mxfarm(&[&["transcript", journal][..], &check].concat()).await;
    (by_ctl, by_file)
}

/// The greylist farm with its API, writing its journal to `journal` too: what ctl reads
/// over HTTP and what `mxfarm transcript`/`report` read from the file.
async fn greylist_with_journal_file(journal: &Path) -> (Farm, Http) {
    let scenario = Scenario::from_toml("grey.toml", GREYLIST).expect("valid");
    let options = FarmOptions::ephemeral().journal_file(JournalFileOptions::new(journal));
    let farm = Farm::start_with(scenario, options).await.expect("starts");
    let http = Http::start(&farm).await;
    (farm, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_moves_the_clock_and_checks_the_transcript_as_transcript_check_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let journal = dir.path().join("journal.jsonl");
    let (farm, http) = greylist_with_journal_file(&journal).await;
    let mx1 = farm.addr("mx1");

    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    let advanced = ctl(&http, &["advance", "6m"]).await;
    assert_eq!(advanced.code, 0, "{}", advanced.stderr);
    assert!(
        advanced
            .stdout
            .starts_with("advanced by 6m; farm time is now 6m"),
        "{}",
        advanced.stdout
    );
    assert_eq!(send(mx1, "bob@grey.test").await, 250);

    // The golden file, written by ctl, matches ctl and the journal file alike.
    let golden = dir.path().join("expected.txt");
    let written = ctl(&http, &["transcript", "--granularity", "minutes"]).await;
    assert_eq!(written.code, 0);
    assert!(
        written.stdout.contains("farm clock advanced by 6m"),
        "{}",
        written.stdout
    );
    std::fs::write(&golden, &written.stdout).expect("write");
    let golden_arg = golden.to_str().expect("path");
    let journal_arg = journal.to_str().expect("path");
    let (by_ctl, by_file) = both_check(&http, journal_arg, golden_arg).await;
    assert_eq!(
        (by_ctl.code, by_file.code),
        (0, 0),
        "{}\n{}",
        by_ctl.stderr,
        by_file.stderr
    );
    assert_eq!(by_ctl.stdout, by_file.stdout);

    // A sender that behaves otherwise: both fail, with the same diff.
    let changed = written.stdout.replace("#2  +6m", "#2  +7m");
    std::fs::write(&golden, changed).expect("write");
    let (by_ctl, by_file) = both_check(&http, journal_arg, golden_arg).await;
    assert_eq!((by_ctl.code, by_file.code), (1, 1));
    assert!(by_ctl.stderr.contains("-  #2  +7m"), "{}", by_ctl.stderr);
    assert_eq!(verdict(&by_ctl.stderr), verdict(&by_file.stderr));
    assert!(
        by_ctl.stderr.contains(&format!(
            "mxfarm ctl --api {} transcript --granularity minutes >",
            http.api.url()
        )),
        "{}",
        by_ctl.stderr
    );
    // A golden file that is not there: both say how to make it.
    let missing = dir.path().join("missing.txt");
    let missing_arg = missing.to_str().expect("path");
    let by_ctl = ctl(&http, &["transcript", "--check", missing_arg]).await;
    let by_file = mxfarm(&["transcript", journal_arg, "--check", missing_arg]).await;
    assert_eq!((by_ctl.code, by_file.code), (1, 1));
    assert!(
        by_ctl.stderr.contains("help: create it with `mxfarm ctl"),
        "{}",
        by_ctl.stderr
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_resets_reports_lists_events_and_replaces_the_scenario() {
    let farm = crate::support::farm(&GREYLIST.replacen(
        "[[host.rule]]",
        "[[host.rule]]\nstage = \"end-of-data\"\nwhen = { rcpt = \"gone@*\" }\nthen = { reply = \"550 5.1.1 no such user\" }\n[[host.rule]]\nstage = \"rcpt\"\nwhen = { rcpt = \"gone@*\" }\nthen = { accept = true }\n[[host.rule]]",
        1,
    ))
    .await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");

    let nothing = ctl(&http, &["report"]).await;
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("no sender has reached the farm"),
        "{}",
        nothing.stderr
    );

    // A sender that retries after a 550: a problem.
    assert_eq!(send(mx1, "gone@grey.test").await, 550);
    assert_eq!(send(mx1, "gone@grey.test").await, 550);
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    let report = ctl(&http, &["report"]).await;
    assert_eq!(report.code, 2, "{}{}", report.stdout, report.stderr);
    assert_eq!(report.stdout, farm.report().render());
    let as_json = ctl(&http, &["report", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&as_json.stdout).expect("JSON");
    assert!(parsed["deliveries"].is_array());

    let events = ctl(&http, &["events"]).await;
    assert_eq!(events.code, 0);
    let lines: Vec<&str> = events.stdout.lines().collect();
    assert_eq!(lines.len(), farm.journal().len());
    assert!(
        lines[0].contains("\"event\":\"farm-started\""),
        "{}",
        lines[0]
    );
    let after = ctl(&http, &["events", "--after", "3"]).await;
    assert!(
        after
            .stdout
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("{\"seq\":4,")),
        "{}",
        after.stdout
    );
    // | head: a reader that goes away early is no error.
    let head = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} ctl --api {} events | head -1",
            env!("CARGO_BIN_EXE_mxfarm"),
            http.api.url()
        ))
        .output()
        .expect("sh");
    assert!(head.status.success());
    assert!(String::from_utf8_lossy(&head.stderr).is_empty());

    let reset = ctl(&http, &["reset", "--policy"]).await;
    assert_eq!(reset.stdout, "reset: policy\n");
    assert_eq!(farm.greylist(), []);
    let reset = ctl(&http, &["reset"]).await;
    assert_eq!(reset.stdout, "reset: policy, journal, messages\n");
    let empty = ctl(&http, &["transcript"]).await;
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    assert!(empty.stderr.contains("no delivery yet"), "{}", empty.stderr);

    // Another scenario, by embedded name: its hosts bound anew (other names).
    let replaced = ctl(&http, &["scenario", "greylist", "--reset-state"]).await;
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert!(
        replaced
            .stdout
            .starts_with("now playing \"greylist\" (state reset): kept "),
        "{}",
        replaced.stdout
    );
    assert_eq!(farm.scenario().name, "greylist");
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let refused = ctl(&http, &["scenario", broken.to_str().expect("path")]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(" --> scenario:"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("help: fix each problem"),
        "{}",
        refused.stderr
    );

    // A scenario file is read as `mxfarm run` reads one: a missing one, or a pipe, is
    // an error that names it, before anything is sent.
    let missing = ctl(&http, &["scenario", "/nonexistent/farm.toml"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("/nonexistent/farm.toml"),
        "{}",
        missing.stderr
    );
    let unknown = ctl(&http, &["scenario", "greylsit"]).await;
    assert!(
        unknown.stderr.contains("did you mean"),
        "{}",
        unknown.stderr
    );

    let bad = ctl(&http, &["advance", "soon"]).await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.starts_with("error: by = \"soon\""),
        "{}",
        bad.stderr
    );
    http.api.shutdown().await;
    farm.shutdown().await;

    let gone = mxfarm(&["ctl", "--api", "http://127.0.0.1:9", "advance", "1m"]).await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr
            .contains("cannot reach the farm's API at http://127.0.0.1:9"),
        "{}",
        gone.stderr
    );
    assert!(gone.stderr.contains("mxfarm run --api"), "{}", gone.stderr);
}

/// A journal in which the farm's clock was moved but no sender came has no retry
/// behaviour to check, from a file as from the running farm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_is_no_sender() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let journal = dir.path().join("journal.jsonl");
    let (farm, http) = greylist_with_journal_file(&journal).await;
    assert_eq!(ctl(&http, &["advance", "1h"]).await.code, 0);
    let by_ctl = ctl(&http, &["report"]).await;
    http.api.shutdown().await;
    farm.shutdown().await;
    let by_file = mxfarm(&["report", journal.to_str().expect("path")]).await;
    assert_eq!(
        (by_ctl.code, by_file.code),
        (1, 1),
        "{}\n{}",
        by_ctl.stderr,
        by_file.stderr
    );
    assert!(
        by_file.stderr.contains("no retry behaviour to check"),
        "{}",
        by_file.stderr
    );
}

/// `ctl ready`, the image's HEALTHCHECK: 0 while the farm takes connections, 1 once its
/// shutdown began (the API still answers, 503) and when nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_ready_follows_the_farm_from_ready_to_gone() {
    let farm = crate::support::farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let ready = ctl(&http, &["ready"]).await;
    assert_eq!(ready.code, 0, "{}", ready.stderr);
    assert!(
        ready.stdout.starts_with("ready: 1 hosts"),
        "{}",
        ready.stdout
    );

    farm.shutdown().await;
    let stopping = ctl(&http, &["ready"]).await;
    assert_eq!(stopping.code, 1, "{}", stopping.stdout);
    assert!(
        stopping.stderr.starts_with("error: "),
        "{}",
        stopping.stderr
    );

    let url = http.api.url();
    http.api.shutdown().await;
    let gone = mxfarm(&["ctl", "--api", url.as_str(), "ready"]).await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("cannot reach the farm's API"),
        "{}",
        gone.stderr
    );
}
