//! Whether a journal file may be written at a path: `mxfarm run --journal FILE` replaces
//! FILE, so FILE must not be one of the files the farm runs from (its scenario, a host's
//! certificate or key, its CA), and an existing file that is not a journal is replaced
//! only when the user says so. A typo (`--journal my.toml`, `--journal notes.txt`) then
//! loses nothing.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::scenario::Scenario;

/// How much of an existing file is read to tell whether it is a journal: its first line
/// (the `farm-started` event), which is short unless the scenario has thousands of
/// domains.
const HEAD_BYTES: u64 = 64 * 1024;

/// Why a journal may not be written at a path.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "--journal {} is {what}; the journal would replace it\n  help: write the journal to a file of its own, e.g. --journal {}",
        journal.display(), instead.display()
    )]
    Protected {
        journal: PathBuf,
        what: String,
        instead: PathBuf,
    },
    #[error(
        "--journal {} holds something other than an mxfarm journal (its first line is not a farm-started event), and the journal would replace it\n  help: write the journal to a file of its own, e.g. --journal {}, or add --journal-overwrite to replace this file",
        journal.display(), instead.display()
    )]
    NotAJournal { journal: PathBuf, instead: PathBuf },
    #[error(
        "cannot read {} to tell whether it is a journal: {source}\n  help: give a file that can be read, or add --journal-overwrite to replace it",
        journal.display()
    )]
    Unreadable {
        journal: PathBuf,
        source: std::io::Error,
    },
}

/// A file the journal must not replace, and what it is ("the scenario file this farm
/// runs").
#[derive(Debug, Clone)]
pub struct Protected {
    pub path: PathBuf,
    pub what: String,
}

/// The files a farm run reads or writes besides its journal: the scenario file (`None`
/// for an embedded scenario), its hosts' own certificates and keys, the CA's certificate
/// and key (`ca`: the files of `--ca DIR`, the certificate first), and the file
/// `--ca-out` writes.
pub fn run_files(
    scenario_file: Option<&Path>,
    scenario: &Scenario,
    ca: &[PathBuf],
    ca_out: Option<&Path>,
) -> Vec<Protected> {
    let protect = |path: &Path, what: String| Protected {
        path: path.to_path_buf(),
        what,
    };
    let mut files = Vec::new();
    if let Some(path) = scenario_file {
        files.push(protect(path, "the scenario file this farm runs".into()));
    }
    for host in &scenario.hosts {
        if let Some(own) = &host.tls.files {
            let name = &host.name;
            files.push(protect(
                &own.cert,
                format!("the certificate of host {name}"),
            ));
            files.push(protect(&own.key, format!("the private key of host {name}")));
        }
    }
    for (path, what) in ca.iter().zip(["certificate", "private key"]) {
        files.push(protect(path, format!("the {what} of the farm's CA")));
    }
    if let Some(path) = ca_out {
        files.push(protect(path, "the file --ca-out writes".into()));
    }
    files
}

/// Checks that a journal may be written at `journal`: it is none of the `protected` files
/// (by any path: the same file through a link, a hard link or `..` is the same), and it
/// does not exist, is empty, is not a regular file (`/dev/stdout`, a pipe), or begins with
/// a `farm-started` event. With `overwrite`, any file that is not protected may be
/// replaced.
pub fn check(journal: &Path, protected: &[Protected], overwrite: bool) -> Result<(), TargetError> {
    if let Some(found) = protected.iter().find(|p| same_file(journal, &p.path)) {
        return Err(TargetError::Protected {
            journal: journal.to_path_buf(),
            what: found.what.clone(),
            instead: instead(journal),
        });
    }
    let Ok(metadata) = std::fs::metadata(journal) else {
        return Ok(());
    };
    if overwrite || !metadata.is_file() || metadata.len() == 0 {
        return Ok(());
    }
    let unreadable = |source| TargetError::Unreadable {
        journal: journal.to_path_buf(),
        source,
    };
    let mut head = Vec::new();
    std::fs::File::open(journal)
        .and_then(|file| file.take(HEAD_BYTES).read_to_end(&mut head))
        .map_err(unreadable)?;
    if starts_like_a_journal(&head) {
        Ok(())
    } else {
        Err(TargetError::NotAJournal {
            journal: journal.to_path_buf(),
            instead: instead(journal),
        })
    }
}

/// Whether `a` and `b` name the same file: the same inode when both exist, the same
/// absolute path when they do not (both would be created).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (Err(_), Err(_)) => match (std::path::absolute(a), std::path::absolute(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}

/// Whether `head`, the start of a file, is the start of a journal: a first line that is a
/// `farm-started` event. A first line longer than `head` is judged by its start, which a
/// farm writes as `{"seq":1,"ms":...,"event":"farm-started",`.
fn starts_like_a_journal(head: &[u8]) -> bool {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<serde_json::Value>(first) {
        Ok(value) => value.get("event").and_then(|e| e.as_str()) == Some("farm-started"),
        Err(_) if first.len() == head.len() && head.len() as u64 == HEAD_BYTES => {
            let start = &first[..first.len().min(100)];
            start.starts_with(b"{\"seq\":")
                && memchr::memmem::find(start, b"\"event\":\"farm-started\"").is_some()
        }
        Err(_) => false,
    }
}

/// A path to suggest instead of `journal`: the same name with `.jsonl`, or
/// `journal.jsonl` next to it.
fn instead(journal: &Path) -> PathBuf {
    match journal.with_extension("jsonl") {
        same if same == journal => journal.with_file_name("journal.jsonl"),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: &str = r#"{"seq":1,"ms":0,"event":"farm-started","scenario":"t","domains":[]}"#;

    #[test]
    fn a_journal_is_told_by_its_first_line() {
        assert!(starts_like_a_journal(
            format!("{STARTED}\n{{}}\n").as_bytes()
        ));
        assert!(starts_like_a_journal(STARTED.as_bytes()), "its only line");
        assert!(!starts_like_a_journal(b"name = \"aol\"\n"));
        assert!(!starts_like_a_journal(
            b"{\"seq\":2,\"event\":\"command\"}\n"
        ));
        assert!(!starts_like_a_journal(b"-----BEGIN CERTIFICATE-----\n"));
        // A first line longer than what is read: by its start.
        let mut long = format!(
            r#"{{"seq":1,"ms":0,"event":"farm-started","scenario":"t","domains":[{}"#,
            "x".repeat(HEAD_BYTES as usize)
        )
        .into_bytes();
        long.truncate(HEAD_BYTES as usize);
        assert!(starts_like_a_journal(&long));
    }

    #[test]
    fn what_may_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("old.jsonl"), format!("{STARTED}\n")).unwrap();
        std::fs::write(path("empty"), "").unwrap();
        std::fs::write(path("notes.txt"), "my notes\n").unwrap();
        for ok in ["old.jsonl", "empty", "new.jsonl"] {
            assert!(check(&path(ok), &[], false).is_ok(), "{ok}");
        }
        assert!(check(Path::new("/dev/null"), &[], false).is_ok());
        let error = check(&path("notes.txt"), &[], false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--journal-overwrite"), "{error}");
        assert!(error.contains("notes.jsonl"), "{error}");
        assert!(check(&path("notes.txt"), &[], true).is_ok());
    }

    #[test]
    fn a_protected_file_is_refused_by_any_path_and_even_when_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::hard_link(&key, dir.path().join("hard.pem")).unwrap();
        let protected = [Protected {
            path: key.clone(),
            what: "the private key of host mx1".into(),
        }];
        for path in [
            key.clone(),
            dir.path().join("hard.pem"),
            dir.path().join(".").join("key.pem"),
        ] {
            let error = check(&path, &protected, true).unwrap_err().to_string();
            assert!(error.contains("is the private key of host mx1"), "{error}");
            assert!(error.contains(".jsonl"), "{error}");
        }
        // Two files the farm would write, neither there yet.
        let out = Protected {
            path: dir.path().join("ca-out.pem"),
            what: "the file --ca-out writes".into(),
        };
        assert!(check(&dir.path().join("ca-out.pem"), &[out], false).is_err());
    }
}
