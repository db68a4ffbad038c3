//! `mxfarm run --journal FILE` replaces FILE: never a file the farm runs from, and an
//! existing file that is not a journal only with `--journal-overwrite`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn mxfarm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mxfarm"))
}

/// Runs `command` to its end, or kills it after the guard: a farm that should have refused
/// to start but serves instead fails the test rather than hanging it.
fn refused(command: &mut Command) -> Output {
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
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no summary");
    out
}

/// Runs `command` until the farm says "Ready.", then stops it with SIGTERM.
fn served(command: &mut Command) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("Ready."));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        ready && out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scenario of one host on a free port, in `dir`, with `tls` as its host's `tls`.
fn scenario(dir: &Path, tls: &str) -> PathBuf {
    let path = dir.join("farm.toml");
    let text =
        format!("name = \"one\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n{tls}\n");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_file_that_is_not_a_journal_is_replaced_only_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let farm = scenario(dir.path(), "");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let out = refused(mxfarm().arg("run").arg(&farm).arg("--journal").arg(&notes));
    let said = stderr(&out);
    assert!(
        said.contains("holds something other than an mxfarm journal"),
        "{said}"
    );
    assert!(said.contains("--journal-overwrite"), "{said}");
    assert!(
        said.contains("notes.jsonl"),
        "says what to write instead: {said}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");

    served(
        mxfarm()
            .arg("run")
            .arg(&farm)
            .arg("--journal")
            .arg(&notes)
            .arg("--journal-overwrite"),
    );
    let written = std::fs::read_to_string(&notes).unwrap();
    assert!(written.contains("\"event\":\"farm-started\""), "{written}");

    // A journal of an earlier run is replaced without being told: one run per file.
    served(mxfarm().arg("run").arg(&farm).arg("--journal").arg(&notes));
    let again = std::fs::read_to_string(&notes).unwrap();
    assert!(again.starts_with("{\"seq\":1,"), "{again}");
}

/// A host's own certificate and key, and the CA's files, are refused as the journal by
/// any path, even with --journal-overwrite.
#[test]
fn the_files_the_farm_runs_from_are_never_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx1.test".to_string()]).unwrap();
    std::fs::write(dir.path().join("chain.pem"), cert.cert.pem()).unwrap();
    let key = cert.signing_key.serialize_pem();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let farm = scenario(
        dir.path(),
        "tls = { cert = \"chain.pem\", key = \"key.pem\" }",
    );
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(dir.path().join("key.pem"), &link).unwrap();
    let cases = [
        (dir.path().join("chain.pem"), "the certificate of host mx1"),
        (link, "the private key of host mx1"),
        (farm.clone(), "the scenario file this farm runs"),
    ];
    for overwrite in [&[][..], &["--journal-overwrite"]] {
        for (journal, what) in &cases {
            let mut command = mxfarm();
            command.arg("run").arg(&farm).arg("--journal").arg(journal);
            let said = stderr(&refused(command.args(overwrite)));
            assert!(said.contains(&format!("is {what}")), "{said}");
            assert!(
                said.contains("write the journal to a file of its own"),
                "{said}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
        key
    );

    let ca = dir.path().join("farm-ca");
    let made = mxfarm().arg("ca").arg(&ca).output().unwrap();
    assert!(made.status.success());
    let ca_key = std::fs::read(ca.join("ca-key.pem")).unwrap();
    let plain = scenario(dir.path(), "");
    let out = refused(
        mxfarm()
            .arg("run")
            .arg(&plain)
            .arg("--ca")
            .arg(&ca)
            .arg("--journal")
            .arg(ca.join("ca-key.pem"))
            .arg("--journal-overwrite"),
    );
    assert!(
        stderr(&out).contains("is the private key of the farm's CA"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), ca_key);
}
