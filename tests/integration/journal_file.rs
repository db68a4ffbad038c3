//! The journal file's contract: every message answered 250 is in the file when the client
//! reads the 250, under load, after SIGKILL, and a file that cannot be written turns 250s
//! into 451s instead of losing messages.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::terminate;
use mxfarm::farm::FarmOptions;
use mxfarm::journal::{EventKind, JournalFileOptions};
use mxfarm::testing::{GUARD, SmtpClient};
use mxfarm::{Farm, Scenario};

/// The message numbers in a journal file's `message-accepted` lines; a torn last line is
/// left out, as the readers leave it out.
fn accepted_in(path: &Path) -> BTreeSet<u64> {
    let parsed = mxfarm::journal::file::read(path).expect("the journal file reads");
    parsed
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::MessageAccepted { id, .. } => Some(id),
            _ => None,
        })
        .collect()
}

/// The number in a `250 ... queued as N` reply.
fn queued_id(text: &str) -> Option<u64> {
    text.rsplit(' ').next()?.trim().parse().ok()
}

const TINY_JOURNAL: &str = r#"
name = "tiny"
[journal]
max-events = 16
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#;

/// Eight senders at once through a journal that keeps only 16 events in memory: each
/// 250 a client reads has its message's line in the file already, and at the end the file
/// holds every event, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_250_is_in_the_file_when_the_client_reads_it_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let scenario = Scenario::from_toml("tiny.toml", TINY_JOURNAL).unwrap();
    let options = FarmOptions::ephemeral().journal_file(JournalFileOptions::new(&path));
    let farm = Farm::start_with(scenario, options).await.unwrap();
    let addr = farm.addr("mx1");
    let mut clients = Vec::new();
    for c in 0..8 {
        let path = path.clone();
        clients.push(tokio::spawn(async move {
            let mut client = SmtpClient::connect(addr).await;
            client.greeting().await;
            client.ehlo("client.test").await;
            let mut ids = Vec::new();
            for m in 0..20 {
                let to = format!("c{c}m{m}@aol.test");
                let sent = client
                    .transaction("s@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
                    .await;
                assert!(sent.delivered(), "{}", client.conversation());
                let reply = sent.end_of_data.map(|r| r.text()).unwrap_or_default();
                let id = queued_id(&reply).expect("a message number in the 250");
                // Read at once: the 250 must not come before the line is in the file.
                assert!(
                    accepted_in(&path).contains(&id),
                    "message {id} was answered 250 but is not in the journal file yet"
                );
                ids.push(id);
            }
            client.quit().await;
            ids
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 160);
    farm.shutdown().await;
    let parsed = mxfarm::journal::file::read(&path).unwrap();
    assert_eq!(parsed.torn, None);
    assert_eq!(
        mxfarm::journal::gaps(&parsed.events),
        None,
        "no event missing"
    );
    assert!(acknowledged.is_subset(&accepted_in(&path)));
}

fn mxfarm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mxfarm"))
}

/// A scenario file with one accepting host on a free port.
fn one_host(dir: &Path) -> (PathBuf, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let path = dir.join("one.toml");
    std::fs::write(
        &path,
        format!("name = \"one\"\n[[host]]\nname = \"mx1\"\nlisten = \"{addr}\"\n"),
    )
    .unwrap();
    (path, addr)
}

/// Starts `command` (an `mxfarm run`) and waits for its "Ready." line.
fn start_farm(command: &mut Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut summary = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        summary.push_str(&line);
        summary.push('\n');
        if line.starts_with("Ready.") {
            return child;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the farm did not start: {summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One client sending messages until the farm goes away (or `stop` messages); returns
/// the numbers of the messages it saw answered 250, counting each in `acks` as it comes.
async fn send_until_gone(
    addr: SocketAddr,
    client: usize,
    stop: usize,
    acks: Arc<AtomicUsize>,
) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return ids;
    };
    let mut c = SmtpClient::over(stream);
    if c.try_reply().await.is_none() || c.try_command("EHLO client.test").await.is_none() {
        return ids;
    }
    for m in 0..stop {
        let to = format!("c{client}m{m}@aol.test");
        let sent = c
            .transaction("s@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
            .await;
        match sent.end_of_data {
            Some(reply) if reply.code == 250 => {
                ids.extend(queued_id(&reply.text()));
                acks.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    ids
}

/// SIGKILL while eight clients send: every message a client saw answered 250 is in the
/// file the killed farm leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let (scenario, addr) = one_host(dir.path());
    let journal = dir.path().join("journal.jsonl");
    let mut child = start_farm(
        mxfarm()
            .arg("run")
            .arg(&scenario)
            .arg("--journal")
            .arg(&journal),
    );
    let acks = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|c| tokio::spawn(send_until_gone(addr, c, 10_000, acks.clone())))
        .collect();
    // Killed in the middle of the load, judged by what the clients saw (not by the
    // file, which would wait for the writer).
    let deadline = std::time::Instant::now() + GUARD;
    while acks.load(Ordering::Relaxed) < 1000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut acknowledged = BTreeSet::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 300,
        "{} acknowledged",
        acknowledged.len()
    );
    let in_file = accepted_in(&journal);
    let lost: Vec<&u64> = acknowledged.difference(&in_file).collect();
    assert!(
        lost.is_empty(),
        "answered 250 but not in the file: {lost:?}"
    );
}

/// The same through `mxfarm run --journal`, with eight clients at once and a journal that
/// keeps 16 events in memory: the file has each message when its 250 is read, and at the
/// end every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_journal_has_every_250_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let (_, addr) = one_host(dir.path());
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(
        &scenario,
        TINY_JOURNAL.replace("127.0.0.1:0", &addr.to_string()),
    )
    .unwrap();
    let journal = dir.path().join("journal.jsonl");
    let child = start_farm(
        mxfarm()
            .arg("run")
            .arg(&scenario)
            .arg("--journal")
            .arg(&journal),
    );
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let mut late = Vec::new();
                let mut ids = Vec::new();
                let mut client = SmtpClient::connect(addr).await;
                client.greeting().await;
                client.ehlo("client.test").await;
                for m in 0..25 {
                    let to = format!("c{c}m{m}@aol.test");
                    let sent = client
                        .transaction("s@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
                        .await;
                    let reply = sent.end_of_data.map(|r| r.text()).unwrap_or_default();
                    let id = queued_id(&reply).expect("a 250 with a message number");
                    if !accepted_in(&journal).contains(&id) {
                        late.push(id);
                    }
                    ids.push(id);
                }
                client.quit().await;
                (ids, late)
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    let mut late = Vec::new();
    for client in clients {
        let (ids, l) = client.await.unwrap();
        acknowledged.extend(ids);
        late.extend(l);
    }
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        late.is_empty(),
        "answered 250 before the file had them: {late:?}"
    );
    let parsed = mxfarm::journal::file::read(&journal).unwrap();
    assert_eq!(
        mxfarm::journal::gaps(&parsed.events),
        None,
        "no event missing"
    );
    assert!(acknowledged.is_subset(&accepted_in(&journal)));
}

/// `/dev/full` takes no line: the farm says so and does not start, rather than answer
/// every message 451 (or, as before, 250 with nothing written).
#[test]
fn a_journal_on_a_full_device_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (scenario, _) = one_host(dir.path());
    let mut child = mxfarm()
        .arg("run")
        .arg(&scenario)
        .args(["--journal", "/dev/full"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A farm that serves instead fails the test rather than hanging it.
    let deadline = std::time::Instant::now() + GUARD;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the journal"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Ready."));
}

/// A file that fills up while the farm runs (here a file size limit, as on a full disk):
/// the messages that did not reach the file get 451 4.3.0, never 250; every 250 is in
/// the file, which stays readable; the error is logged once.
#[tokio::test]
async fn a_journal_that_fills_up_turns_250_into_451() {
    let dir = tempfile::tempdir().unwrap();
    let (scenario, addr) = one_host(dir.path());
    let journal = dir.path().join("journal.jsonl");
    let child = start_farm(
        Command::new("prlimit")
            .arg("--fsize=6000")
            .arg(env!("CARGO_BIN_EXE_mxfarm"))
            .arg("run")
            .arg(&scenario)
            .arg("--journal")
            .arg(&journal),
    );
    let mut c = SmtpClient::connect(addr).await;
    c.greeting().await;
    c.ehlo("client.test").await;
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for m in 0..60 {
        let to = format!("m{m}@aol.test");
        let sent = c
            .transaction("s@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
            .await;
        let reply = sent.end_of_data.expect("a reply to the final dot");
        match reply.code {
            250 => {
                assert_eq!(refused, 0, "a 250 after a 451: {}", c.conversation());
                acknowledged.extend(queued_id(&reply.text()));
            }
            451 => {
                assert!(reply.text().contains("4.3.0"), "{}", reply.text());
                refused += 1;
            }
            code => panic!("unexpected {code}: {}", c.conversation()),
        }
    }
    c.quit().await;
    assert!(
        !acknowledged.is_empty() && refused > 0,
        "{acknowledged:?} {refused}"
    );
    let out = terminate(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("ERROR").count(), 1, "logged once: {stderr}");
    let parsed = mxfarm::journal::file::read(&journal).unwrap();
    assert_eq!(parsed.torn, None, "the file ends with a whole line");
    assert_eq!(accepted_in(&journal), acknowledged);
}

/// Past `--journal-max-bytes` the file is rotated into FILE.1 and begins again with the
/// farm's first line; read together, the two hold every event of the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_journal_reads_whole_with_its_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let scenario = Scenario::from_toml("tiny.toml", TINY_JOURNAL).unwrap();
    let file = JournalFileOptions {
        max_bytes: Some(16 * 1024),
        ..JournalFileOptions::new(&path)
    };
    let farm = Farm::start_with(
        scenario,
        FarmOptions::ephemeral().journal_file(file.clone()),
    )
    .await
    .unwrap();
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.greeting().await;
    c.ehlo("client.test").await;
    let mut ids = BTreeSet::new();
    for m in 0..40 {
        let to = format!("m{m}@aol.test");
        let sent = c
            .transaction("s@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
            .await;
        ids.extend(sent.end_of_data.and_then(|r| queued_id(&r.text())));
    }
    c.quit().await;
    farm.shutdown().await;
    let newest = mxfarm::journal::file::read(&path).unwrap().events;
    let older = mxfarm::journal::file::read(&file.rotated_path())
        .unwrap()
        .events;
    assert!(std::fs::metadata(&path).unwrap().len() <= 16 * 1024);
    assert!(matches!(newest[0].kind, EventKind::FarmStarted { .. }));
    assert_eq!(newest[0].seq, 1);
    assert!(
        mxfarm::journal::gaps(&newest).is_some(),
        "the newest alone lacks the start"
    );
    let merged = mxfarm::journal::file::merge(vec![older.clone(), newest.clone()]);
    let last_seq = merged.last().map(|e| e.seq).unwrap();
    let first_of_older = older.get(1).map(|e| e.seq).unwrap();
    assert!(merged.windows(2).all(|w| w[0].seq < w[1].seq));
    // The two files hold every event from the older file's first on.
    assert_eq!(
        merged.len() as u64,
        1 + last_seq - first_of_older + 1,
        "no gap after the rotation"
    );
    let in_files: BTreeSet<u64> = merged
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::MessageAccepted { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert!(ids.iter().rev().take(10).all(|id| in_files.contains(id)));
    // The command line reads them together.
    let out = mxfarm()
        .arg("report")
        .arg(file.rotated_path())
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The farm's memory and its journal file tell the same story of accepted messages,
/// short recipient lists and long ones (which the memory shares with the capture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_file_have_the_same_accepted_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let scenario = Scenario::from_toml(
        "one.toml",
        "name = \"one\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let options = FarmOptions::ephemeral().journal_file(JournalFileOptions::new(&path));
    let farm = Farm::start_with(scenario, options).await.unwrap();
    let mut client = SmtpClient::connect(farm.addr("mx1")).await;
    client.greeting().await;
    client.ehlo("client.test").await;
    let many: Vec<String> = (0..40).map(|n| format!("recipient-{n}@aol.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for recipients in [&["a@aol.test", "b@aol.test"][..], &many[..]] {
        let sent = client
            .transaction("s@example.test", recipients, "Subject: x\r\n\r\nhi\r\n")
            .await;
        assert!(sent.delivered(), "{}", client.conversation());
    }
    client.quit().await;
    let accepted = |events: Vec<mxfarm::Event>| -> Vec<EventKind> {
        events
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| matches!(k, EventKind::MessageAccepted { .. }))
            .collect()
    };
    let in_memory = accepted(farm.journal());
    farm.shutdown().await;
    let in_file = accepted(mxfarm::journal::file::read(&path).unwrap().events);
    assert_eq!(in_memory.len(), 2);
    assert_eq!(in_memory, in_file);
    let EventKind::MessageAccepted { recipients, .. } = &in_memory[1] else {
        unreachable!()
    };
    assert_eq!(recipients, &many);
}
