//! Loader tests of TLS settings and STARTTLS rules (split from `tests.rs`, whose helpers
//! they use).

use super::tls::TLS_MODES;
use crate::scenario::error::Issue;
use crate::scenario::model::*;
use std::path::{Path, PathBuf};

use super::tests::*;

fn tls_rule(stage: &str, when: &str, then: &str) -> String {
    format!("{TLS_HOST}[[host.rule]]\nstage = \"{stage}\"\nwhen = {when}\nthen = {then}\n")
}

/// The host's TLS settings when it is written `tls = <value>`.
#[track_caller]
fn tls_of(value: &str) -> TlsSettings {
    assert_loads(&format!("{HOST}tls = {value}\n")).hosts[0]
        .tls
        .clone()
}

/// Validates `text` as a scenario file in `dir`.
fn load_in(dir: &Path, text: &str) -> Result<Scenario, Vec<Issue>> {
    crate::scenario::load::load(text, Some(dir))
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

#[test]
fn tls_is_off_unless_written_and_each_mode_reads_as_a_string() {
    assert_eq!(assert_loads(HOST).hosts[0].tls, TlsSettings::default());
    assert_eq!(TlsSettings::default().mode, TlsMode::Off);
    for (name, mode) in TLS_MODES {
        assert_eq!(
            tls_of(&format!("\"{name}\"")),
            TlsSettings {
                mode,
                versions: TlsVersions::Any,
                files: None
            },
            "{name}"
        );
        assert_eq!(mode.as_str(), name);
    }
    assert_eq!(tls_of("\" Self-Signed \"").mode, TlsMode::SelfSigned);
}

#[test]
fn tls_as_a_table_defaults_to_valid_and_any_version() {
    let valid = |versions| TlsSettings {
        mode: TlsMode::Valid,
        versions,
        files: None,
    };
    assert_eq!(tls_of("{}"), valid(TlsVersions::Any));
    assert_eq!(tls_of("{ versions = \"1.2\" }"), valid(TlsVersions::Only12));
    assert_eq!(
        tls_of("{ mode = \"valid\", versions = \"1.3\" }"),
        valid(TlsVersions::Only13)
    );
    assert_eq!(tls_of("{ versions = \"ANY\" }"), valid(TlsVersions::Any));
    assert_eq!(
        tls_of("{ mode = \"expired\", versions = \"1.3\" }"),
        TlsSettings {
            mode: TlsMode::Expired,
            versions: TlsVersions::Only13,
            files: None
        }
    );
    assert_eq!(tls_of("{ mode = \"off\" }"), TlsSettings::default());
    // and as a [host.tls] table
    let s = assert_loads(&format!(
        "{HOST}[host.tls]\nmode = \"wrong-hostname\"\nversions = \"1.2\"\n"
    ));
    assert_eq!(
        (s.hosts[0].tls.mode, s.hosts[0].tls.versions),
        (TlsMode::WrongHostname, TlsVersions::Only12)
    );
}

#[test]
fn tls_cert_and_key_files_are_found_relative_to_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = dir.path().join("certs/chain.pem");
    let key = dir.path().join("certs/key.pem");
    std::fs::write(&cert, PEM_CERT).unwrap();
    // a key file may hold the certificate too
    std::fs::write(&key, format!("{PEM_CERT}{PEM_KEY}")).unwrap();

    // absolute paths, from anywhere
    let s = assert_loads(&format!(
        "{HOST}tls = {{ cert = {:?}, key = {:?} }}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let files = |s: &Scenario| s.hosts[0].tls.files.clone().unwrap();
    assert_eq!(
        files(&s),
        TlsFiles {
            cert: cert.clone(),
            key: key.clone()
        }
    );
    assert_eq!(s.hosts[0].tls.mode, TlsMode::Valid);

    // relative paths, from the scenario file's directory
    let text = format!(
        "{HOST}tls = {{ mode = \"valid\", versions = \"1.3\", cert = \"certs/chain.pem\", key = \"certs/key.pem\" }}\n"
    );
    let s = load_in(dir.path(), &text).unwrap();
    assert_eq!(files(&s), TlsFiles { cert, key });
    assert_eq!(s.hosts[0].tls.versions, TlsVersions::Only13);

    // from the current directory when the scenario is given as text
    let here = tempfile::tempdir_in(".").unwrap();
    std::fs::write(here.path().join("c.pem"), PEM_CERT).unwrap();
    std::fs::write(here.path().join("k.pem"), PEM_KEY).unwrap();
    let name = here.path().file_name().unwrap().to_str().unwrap();
    let s = assert_loads(&format!(
        "{HOST}tls = {{ cert = \"{name}/c.pem\", key = \"{name}/k.pem\" }}\n"
    ));
    assert_eq!(files(&s).cert, PathBuf::from(format!("{name}/c.pem")));

    // a missing file is named as written, and where it was looked for
    let err = load_in(
        dir.path(),
        &format!("{HOST}tls = {{ cert = \"certs/nope.pem\", key = \"certs/key.pem\" }}\n"),
    )
    .unwrap_err();
    assert_eq!(err.len(), 1, "{err:#?}");
    let looked = dir.path().join("certs/nope.pem");
    assert_eq!(
        err[0].message,
        format!(
            "the certificate chain file `certs/nope.pem` does not exist (looked for {})",
            looked.display()
        )
    );
    assert!(
        err[0]
            .hint
            .contains("relative to the directory of the scenario file")
    );
    let found = problems(&format!(
        "{HOST}tls = {{ cert = \"no/such/chain.pem\", key = \"no/such/key.pem\" }}\n"
    ));
    assert_eq!(
        found.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        [
            "the certificate chain file `no/such/chain.pem` does not exist",
            "the private key file `no/such/key.pem` does not exist"
        ]
    );

    // files that are not what they should be
    let text =
        |cert: &str, key: &str| format!("{HOST}tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n");
    std::fs::write(dir.path().join("junk.der"), [0x30u8, 0x82, 0x01]).unwrap();
    let cases = [
        (
            text("certs/key.pem", "certs/chain.pem"),
            "`certs/chain.pem` holds a certificate, not a private key",
            "may be swapped",
        ),
        (
            text("junk.der", "certs/key.pem"),
            "`junk.der` holds no PEM certificate",
            "openssl x509 -inform der",
        ),
        (
            text("certs/chain.pem", "junk.der"),
            "`junk.der` holds no PEM private key",
            "BEGIN PRIVATE KEY",
        ),
        (
            text("certs", "certs/key.pem"),
            "`certs` is a directory, not a certificate chain file",
            "PEM file",
        ),
    ];
    std::fs::write(dir.path().join("certs/only-key.pem"), PEM_KEY).unwrap();
    let swapped = load_in(dir.path(), &text("certs/only-key.pem", "certs/key.pem")).unwrap_err();
    assert_eq!(
        swapped[0].message,
        "`certs/only-key.pem` holds a private key, not a certificate"
    );
    for (text, message, hint) in cases {
        let err = load_in(dir.path(), &text).unwrap_err();
        assert!(
            err.iter()
                .any(|i| i.message.contains(message) && i.hint.contains(hint)),
            "{message}: {err:#?}"
        );
    }
}

#[test]
fn starttls_rules_conditions_and_actions_are_read() {
    let action = |stage: &str, when: &str, then: &str| {
        let s = assert_loads(&tls_rule(stage, when, then));
        let rule = &s.hosts[0].rules[0];
        assert_eq!(rule.stage, Stage::parse(stage).unwrap());
        (rule.when.clone(), rule.then.clone())
    };
    let kind = |then: &str| action("starttls", "{}", then).1.kind;
    assert_eq!(kind("{ accept = true }"), ActionKind::Accept);
    assert_eq!(
        kind("{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }"),
        ActionKind::Reply {
            reply: Reply::new(
                454,
                Some("4.7.0"),
                "TLS not available due to temporary reason"
            ),
            close: false
        }
    );
    assert_eq!(
        kind("{ reply = \"220 2.0.0 Go ahead\" }"),
        ActionKind::Reply {
            reply: Reply::new(220, Some("2.0.0"), "Go ahead"),
            close: false
        }
    );
    for (name, fault) in [
        ("close-after-ready", TlsFault::CloseAfterReady),
        ("alert", TlsFault::Alert),
        ("close-mid-handshake", TlsFault::CloseMidHandshake),
        ("Garbage", TlsFault::Garbage),
    ] {
        assert_eq!(
            kind(&format!("{{ tls-fault = \"{name}\" }}")),
            ActionKind::TlsFault(fault)
        );
    }
    assert_eq!(
        action(
            "starttls",
            "{ chance = 0.5 }",
            "{ tls-fault = { hang = \"10m\" }, delay = \"2s\" }"
        )
        .1,
        Action {
            delay: Some(secs(2)),
            kind: ActionKind::TlsFault(TlsFault::Hang(secs(600)))
        }
    );
    assert_eq!(
        action(
            "ehlo",
            "{ connection = \"<=3\" }",
            "{ hide-starttls = true }"
        )
        .1,
        Action {
            delay: None,
            kind: ActionKind::HideStarttls
        }
    );
    assert_eq!(
        action("ehlo", "{}", "{ hide-starttls = true, delay = \"1s\" }").1,
        Action {
            delay: Some(secs(1)),
            kind: ActionKind::HideStarttls
        }
    );
    // `tls` from `ehlo` on
    for stage in [
        "ehlo",
        "mail",
        "rcpt",
        "data",
        "end-of-data",
        "rset",
        "quit",
    ] {
        let (when, _) = action(
            stage,
            "{ tls = false }",
            "{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }",
        );
        assert_eq!(when, [Condition::Tls(false)], "{stage}");
    }
    let (when, _) = action(
        "mail",
        "{ tls = true, client = \"192.0.2.1\" }",
        "{ accept = true }",
    );
    assert_eq!(when[1], Condition::Tls(true));
    // the conditions that need no MAIL FROM work at `starttls`
    let (when, _) = action(
        "starttls",
        "{ helo = \"*.test\", attempt = \"<3\", per = \"client\" }",
        "{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }",
    );
    assert_eq!(when.len(), 2);
}

#[test]
fn a_ruleset_may_hold_starttls_rules_for_hosts_without_tls() {
    let s = assert_loads(
        "name = \"t\"\n\
         [[host]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"tls\"]\n\
         [[host]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\ntls = \"valid\"\nrulesets = [\"tls\"]\n\
         [[ruleset]]\nname = \"tls\"\n\
         [[ruleset.rule]]\nstage = \"starttls\"\nwhen = { chance = 0.5 }\nthen = { tls-fault = \"alert\" }\n\
         [[ruleset.rule]]\nstage = \"ehlo\"\nwhen = { chance = 0.5 }\nthen = { hide-starttls = true }\n\
         [[ruleset.rule]]\nstage = \"mail\"\nwhen = { tls = false }\nthen = { reply = \"530 5.7.0 Must issue a STARTTLS command first\" }\n",
    );
    assert_eq!(s.host("plain").unwrap().rules.len(), 3);
    assert_eq!(s.host("plain").unwrap().tls.mode, TlsMode::Off);
    assert_eq!(s.host("secure").unwrap().tls.mode, TlsMode::Valid);
}

#[test]
fn a_host_without_tls_gets_one_problem_per_rule_that_needs_it() {
    let text = format!(
        "{HOST}[[host.rule]]\nstage = \"starttls\"\nwhen = {{ tls = false }}\nthen = {{ tls-fault = \"alert\" }}\n\
         [[host.rule]]\nstage = \"mail\"\nwhen = {{ tls = false }}\nthen = {{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }}\n\
         [[host.rule]]\nstage = \"ehlo\"\nthen = {{ hide-starttls = true }}\n\
         [[host.rule]]\nstage = \"rcpt\"\nthen = {{ tls-fault = \"alert\" }}\n"
    );
    let err = load(&text).unwrap_err();
    let found: Vec<(&str, &str)> = err
        .problems()
        .iter()
        .map(|p| (&text[p.span.clone().unwrap()], p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "\"starttls\"",
                "a rule at `starttls`, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "false",
                "`tls` cannot be tested at `starttls`: STARTTLS is not offered again once TLS is on (RFC 3207), so it is always false"
            ),
            (
                "false",
                "a `tls` condition, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "true",
                "`hide-starttls`, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "\"alert\"",
                "`tls-fault` cannot be used at `rcpt`: it breaks the TLS handshake that follows STARTTLS"
            ),
        ],
        "{err}"
    );
    assert!(
        err.problems()[0]
            .hint
            .contains("add tls = \"valid\" (or another mode) to this [[host]] on line 2")
    );
    // a broken `tls` is reported alone
    let found = problems(&format!(
        "{HOST}tls = \"of\"\n[[host.rule]]\nstage = \"starttls\"\nthen = {{ accept = true }}\n"
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.contains("did you mean `off`?"), "{found:#?}");
}
