//! How broken scenario files are reported: every problem at once, each with its place in
//! the file and a hint. The snapshots are what a newcomer sees, so they must read well.

use std::path::Path;

use mxfarm::scenario::{self, ScenarioError};

/// Loads a file of `tests/fixtures/broken/`, which must fail.
fn broken(name: &str) -> ScenarioError {
    let path = format!("tests/fixtures/broken/{name}.toml");
    match scenario::load_path(Path::new(&path)) {
        Ok(_) => panic!("{path} loaded, but it is meant to be broken"),
        Err(error) => error,
    }
}

#[test]
fn a_file_with_many_problems_reports_them_all() {
    let error = broken("many_problems");
    assert!(error.problems().len() >= 20, "{error}");
    insta::assert_snapshot!(error.to_string());
}

#[test]
fn a_toml_syntax_error() {
    insta::assert_snapshot!(broken("syntax_error").to_string());
}

#[test]
fn a_typo_in_a_key() {
    let error = broken("unknown_key_typo");
    // only the typo: not also "`then` has no action", which is the same mistake
    assert_eq!(error.problems().len(), 1, "{error}");
    insta::assert_snapshot!(error.to_string());
}

#[test]
fn an_mx_that_names_no_host() {
    insta::assert_snapshot!(broken("mx_names_no_host").to_string());
}

#[test]
fn duplicate_host_names_and_listen_addresses() {
    insta::assert_snapshot!(broken("duplicate_host_and_listen").to_string());
}

#[test]
fn bad_durations_and_sizes() {
    insta::assert_snapshot!(broken("bad_durations_and_sizes").to_string());
}

#[test]
fn positive_replies_where_a_refusal_or_the_stage_s_own_code_belongs() {
    insta::assert_snapshot!(broken("refusal_with_2xx").to_string());
}

#[test]
fn a_single_table_where_a_list_of_tables_belongs() {
    insta::assert_snapshot!(broken("single_brackets").to_string());
}

#[test]
fn a_missing_file_names_the_path_and_what_to_do() {
    let error = scenario::load_path(Path::new("tests/fixtures/no-such-file.toml")).unwrap_err();
    assert_eq!(error.problems()[0].line, 0);
    insta::assert_snapshot!(error.to_string());
}

#[test]
fn an_unknown_embedded_scenario_lists_the_embedded_ones() {
    let error = scenario::load_embedded("aoll").unwrap_err();
    insta::assert_snapshot!(error.to_string());
}

#[test]
fn problems_carry_line_column_message_and_hint() {
    let error = broken("unknown_key_typo");
    let typo = error
        .problems()
        .iter()
        .find(|p| p.message.contains("relpy"))
        .expect("a problem about `relpy`");
    assert_eq!((typo.line, typo.column), (11, 10));
    assert!(typo.hint.contains("did you mean `reply`?"), "{}", typo.hint);
}

/// A file with 40,000 problems (20,000 hosts, each with a misspelt key and a name taken
/// already): each is placed and shown on its own line, and the hint names the line of the
/// first host. Placing each problem used to scan the file from its start, and comparing
/// listen addresses went host by host: such a file took minutes (timings are in the
/// report of issue 10, not here).
#[test]
fn forty_thousand_problems_are_each_placed_and_shown() {
    let hosts = 20_000;
    let mut text = String::from("name = \"big\"\n");
    for _ in 0..hosts {
        text.push_str("[[host]]\nname = \"mx\"\nlisten = \"127.0.0.1:0\"\nrelpy = 1\n");
    }
    let error = scenario::load_str("big.toml", &text).unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 2 * hosts - 1);
    for i in 0..hosts {
        let first_line = 2 + 4 * i;
        let typo = &problems[2 * i];
        assert_eq!((typo.line, typo.column), (first_line + 3, 1), "{typo:?}");
        assert!(typo.message.contains("`relpy`"), "{typo:?}");
        if i > 0 {
            let twice = &problems[2 * i - 1];
            assert_eq!((twice.line, twice.column), (first_line + 1, 8), "{twice:?}");
            assert!(twice.hint.contains("on line 3"), "{twice:?}");
        }
    }
    let shown = error.to_string();
    let last = 1 + 4 * hosts;
    assert!(
        shown.contains(&format!("--> big.toml:{last}:1\n")),
        "{}",
        &shown[shown.len() - 600..]
    );
    assert!(shown.contains(&format!("\n{last} | relpy = 1\n")));
    assert!(shown.ends_with("error: big.toml has 39999 problems"));
}

/// Runs `load` on a thread of its own and gives what it returned, or fails the test when
/// it has not returned within the guard: what it reads may be a pipe that never ends,
/// and a hang must fail the test, not stall the run.
fn within_guard<T: Send + 'static>(load: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(load());
    });
    result
        .recv_timeout(mxfarm::testing::GUARD)
        .expect("loading did not return: it waits on what it reads")
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A scenario in `dir` whose host presents the files `cert` and `key` of that directory.
fn with_own_certificate(dir: &Path, cert: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join("farm.toml");
    let text = format!(
        "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `cert` or `key` that is a named pipe is reported at its key, like any other file that
/// is not a PEM file; reading it would wait for a writer for ever.
#[test]
fn a_certificate_or_key_that_is_a_named_pipe_is_a_problem_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("chain.pem"));
    mkfifo(&dir.path().join("key.pem"));
    let path = with_own_certificate(dir.path(), "chain.pem", "key.pem");
    let error = within_guard(move || scenario::load_path(&path).unwrap_err());
    let problems = error.problems();
    assert_eq!(problems.len(), 2, "{error}");
    let looked = dir.path().join("chain.pem");
    assert_eq!(
        problems[0].message,
        format!(
            "`chain.pem` is a named pipe (FIFO), not a certificate chain file (looked for {})",
            looked.display()
        )
    );
    assert_eq!(
        problems[0].hint,
        "give the path of a regular PEM file, like cert = \"certs/chain.pem\""
    );
    assert_eq!((problems[0].line, problems[0].column), (5, 16));
    assert!(
        problems[1]
            .message
            .starts_with("`key.pem` is a named pipe (FIFO), not a private key file"),
        "{error}"
    );
    assert_eq!((problems[1].line, problems[1].column), (5, 35));
}

/// A PEM file is read up to 1 MiB: more is not a certificate, and reading on could
/// exhaust memory.
#[test]
fn a_certificate_larger_than_a_pem_file_can_be_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("chain.pem")).unwrap();
    big.set_len(1024 * 1024 + 1).unwrap();
    let path = with_own_certificate(dir.path(), "chain.pem", "/no/such/key.pem");
    let error = scenario::load_path(&path).unwrap_err();
    let problem = &error.problems()[0];
    assert!(
        problem
            .message
            .starts_with("`chain.pem` is larger than 1 MiB, too big for a certificate chain file"),
        "{error}"
    );
    assert_eq!(
        problem.hint,
        "give the path of a regular PEM file, like cert = \"certs/chain.pem\""
    );
}

/// The scenario file itself is read the same way: a named pipe or a device is an error
/// that says what to give instead, not a hang or a read without end.
#[test]
fn a_scenario_that_is_a_named_pipe_or_a_device_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("farm.toml");
    mkfifo(&fifo);
    for (path, what) in [
        (fifo, "a named pipe (FIFO)"),
        (Path::new("/dev/zero").to_path_buf(), "a character device"),
    ] {
        let shown = path.display().to_string();
        let error = within_guard(move || scenario::load_path(&path).unwrap_err());
        assert_eq!(
            error.to_string(),
            format!(
                "error: cannot read scenario file {shown}: it is {what}, not a regular file\n  = help: give the path of a .toml file; to play a scenario another program writes, save it to a file first"
            )
        );
    }
}

/// A scenario larger than 4 MiB is refused before it is parsed.
#[test]
fn a_scenario_larger_than_the_limit_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4 * 1024 * 1024 + 1).unwrap();
    let error = scenario::load_path(&path).unwrap_err();
    let problem = &error.problems()[0];
    assert!(
        problem
            .message
            .ends_with("huge.toml: it is larger than 4 MiB"),
        "{error}"
    );
    assert!(
        problem
            .hint
            .contains("a scenario is TOML text of a few KiB"),
        "{error}"
    );
}

#[test]
fn every_embedded_scenario_loads() {
    assert!(!scenario::embedded().is_empty());
    for embedded in scenario::embedded() {
        let loaded = embedded
            .load()
            .unwrap_or_else(|e| panic!("embedded scenario {} is broken:\n{e}", embedded.name));
        assert_eq!(
            loaded.name, embedded.name,
            "the file name and `name` should agree"
        );
        assert!(
            !embedded.description().is_empty(),
            "{} has no description",
            embedded.name
        );
        assert!(!loaded.hosts.is_empty());
    }
    assert!(scenario::load_embedded(scenario::DEFAULT_SCENARIO).is_ok());
}

#[test]
fn every_shipped_scenario_file_is_embedded() {
    let mut files: Vec<String> = std::fs::read_dir("scenarios")
        .expect("the scenarios/ folder")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".toml")?.to_string())
        })
        .collect();
    files.sort();
    let mut embedded: Vec<String> = scenario::embedded()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    embedded.sort();
    assert_eq!(
        files, embedded,
        "add new files of scenarios/ to EMBEDDED in src/scenario/mod.rs"
    );
}

#[test]
fn the_example_in_the_format_doc_loads() {
    let doc = std::fs::read_to_string("docs/scenario-format.md").expect("the format doc");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block in docs/scenario-format.md");
    let loaded = scenario::load_str("docs/scenario-format.md", example)
        .unwrap_or_else(|e| panic!("the example in the format doc does not load:\n{e}"));
    let mx1 = loaded.host("mx1").expect("mx1");
    let origins: Vec<&str> = mx1.rules.iter().map(|r| &*r.origin).collect();
    assert_eq!(origins, ["host mx1 rule 1", "ruleset common rule 1"]);
}

#[test]
fn greylisting_and_limits_written_wrong() {
    insta::assert_snapshot!(broken("greylist_and_limits").to_string());
}

#[test]
fn new_conditions_and_actions_at_the_wrong_stage_or_with_wrong_values() {
    insta::assert_snapshot!(broken("new_conditions").to_string());
}

#[test]
fn starttls_settings_and_rules_written_wrong() {
    let error = broken("tls");
    // a host without `tls` gets one problem per rule that needs it
    let off = error
        .problems()
        .iter()
        .filter(|p| p.message.contains("does not offer STARTTLS"))
        .count();
    assert_eq!(off, 2, "{error}");
    insta::assert_snapshot!(error.to_string());
}

#[test]
fn a_reverse_dns_table_written_wrong() {
    insta::assert_snapshot!(broken("reverse_dns").to_string());
}

#[test]
fn unknown_placeholders_in_replies() {
    let error = broken("reply_placeholders");
    // each problem points at the placeholder, not at the whole reply
    for problem in error.problems() {
        let span = problem.span.clone().expect("a place in the file");
        assert!(span.len() <= 16, "{problem:?}");
    }
    insta::assert_snapshot!(error.to_string());
}

/// Every ```toml block of the format doc loads: complete scenarios as they are, rule
/// fragments under a one-host scenario.
#[test]
fn every_toml_example_in_the_format_doc_loads() {
    let doc = std::fs::read_to_string("docs/scenario-format.md").expect("the format doc");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 10, "only {} examples", blocks.len());
    let mut failures = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        // A complete scenario starts with its name; a fragment may name a [[domain]].
        let complete = block
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with("name = "));
        let text = if complete {
            block.to_string()
        } else {
            format!("name = \"doc\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n{block}")
        };
        if let Err(e) = scenario::load_str(&format!("example {}", i + 1), &text) {
            failures.push(format!("{block}\n{e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
