//! `mxfarm ca DIR` as a user runs it, and what its CA is good for: its key is its owner's
//! alone, it never writes through a link planted in DIR nor over a CA already there, and
//! a machine that trusts it trusts it for the farm's names only. The handshakes are real
//! (rustls over an in-memory pipe, and over TCP to a farm); the certificates an attacker
//! would mint are made the attacker's way, from the files in DIR.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use mxfarm::farm::FarmOptions;
use mxfarm::testing::GUARD;
use mxfarm::tls::FarmCa;
use mxfarm::{Farm, Scenario};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::greeted;

/// `mxfarm ca ARGS...` under umask 022, the usual one, under which the key used to be
/// written readable by everyone.
fn mxfarm_ca(args: &[&str], dir: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" ca \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mxfarm"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_key_is_written_for_its_owner_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("farm-ca");
    let said = succeeded(&mxfarm_ca(&[], &ca));
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&ca.join("ca.pem")), 0o644, "the certificate is public");
    assert_eq!(mode(&ca), 0o700, "a directory it creates is its owner's");
    assert!(said.contains("readable by you alone"), "{said}");
    assert!(said.contains("use it with: mxfarm run --ca "), "{said}");
    // Nothing else is left in the directory (no file it wrote first).
    let mut names: Vec<String> = std::fs::read_dir(&ca)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca-key.pem", "ca.pem"]);
}

#[test]
fn a_ca_already_there_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("farm-ca");
    succeeded(&mxfarm_ca(&[], &ca));
    let before = (
        std::fs::read(ca.join("ca.pem")).unwrap(),
        std::fs::read(ca.join("ca-key.pem")).unwrap(),
    );
    let again = mxfarm_ca(&[], &ca);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("holds a CA already"), "{stderr}");
    assert!(stderr.contains("mxfarm ca --force "), "{stderr}");
    assert!(stderr.contains("mxfarm run --ca "), "{stderr}");
    let after = (
        std::fs::read(ca.join("ca.pem")).unwrap(),
        std::fs::read(ca.join("ca-key.pem")).unwrap(),
    );
    assert_eq!(before, after, "the CA was left as it was");

    succeeded(&mxfarm_ca(&["--force"], &ca));
    assert_ne!(std::fs::read(ca.join("ca.pem")).unwrap(), before.0);
    assert_ne!(std::fs::read(ca.join("ca-key.pem")).unwrap(), before.1);
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
}

/// A link planted at `DIR/ca-key.pem` (by someone who may write in DIR) is never written
/// through: without `--force` it is a CA already there; with it, the link itself is
/// replaced by the key, and the file it pointed at is untouched.
#[test]
fn a_link_planted_at_the_key_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("farm-ca");
    std::fs::create_dir(&ca).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, ca.join("ca-key.pem")).unwrap();
    // A dangling link is not followed either: it would create the file it names.
    let elsewhere = dir.path().join("elsewhere.pem");
    std::os::unix::fs::symlink(&elsewhere, ca.join("ca.pem")).unwrap();

    let out = mxfarm_ca(&[], &ca);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!elsewhere.exists());

    succeeded(&mxfarm_ca(&["--force"], &ca));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    assert!(!elsewhere.exists());
    let key = std::fs::symlink_metadata(ca.join("ca-key.pem")).unwrap();
    assert!(
        key.file_type().is_file(),
        "the link was replaced by the key"
    );
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
    assert!(FarmCa::load(&ca).is_ok());
}

/// What someone who has the CA's files can do: sign a certificate of their own for any
/// name, as openssl would, with the CA's key.
fn minted_with_the_key_of(
    ca: &Path,
    names: &[&str],
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_pem = std::fs::read_to_string(ca.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = rcgen::CertificateParams::new(names).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
}

/// A rustls client that trusts the CA of `dir` alone.
fn trusting(ca: &Path) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(ca.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A real handshake over an in-memory pipe: a server presenting `cert`, a client that
/// trusts the CA of `ca` and connects to `name`. The client's error, if it refused.
async fn handshake_with(
    ca: &Path,
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
    name: &str,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(async move { acceptor.accept(server_end).await.map(|_| ()) });
    let name = ServerName::try_from(name.to_string()).unwrap();
    let connected = tokio::time::timeout(GUARD, trusting(ca).connect(name, client_end))
        .await
        .expect("the handshake ends within the guard");
    let _ = served.await;
    connected.map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn farm_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("farm-ca");
    succeeded(&mxfarm_ca(&[], &ca));
    ca
}

/// Trusting the farm's CA trusts it for the farm's names only: what its key signs for
/// `mx1.aol.test` or a loopback address verifies, and for `www.google.com` or a public
/// address it does not, because of the CA's name constraints.
#[tokio::test]
async fn the_ca_cannot_vouch_for_a_real_name_even_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = farm_ca(dir.path());
    for (names, name) in [
        (&["mx1.aol.test"][..], "mx1.aol.test"),
        (&["mx1.aol.test", "127.0.0.1"], "127.0.0.1"),
        (&["host.localhost", "10.1.2.3"], "host.localhost"),
    ] {
        let minted = minted_with_the_key_of(&ca, names);
        let verified = handshake_with(&ca, minted, name).await;
        assert_eq!(verified, Ok(()), "{names:?}");
    }
    for (names, name) in [
        (&["www.google.com"][..], "www.google.com"),
        (&["mx1.aol.test", "www.google.com"], "mx1.aol.test"),
        (&["8.8.8.8"], "8.8.8.8"),
        (&["test.com"], "test.com"),
    ] {
        let minted = minted_with_the_key_of(&ca, names);
        let refused = handshake_with(&ca, minted, name).await.unwrap_err();
        assert!(
            refused.contains("NameConstraintViolation"),
            "{names:?}: {refused}"
        );
    }
}

/// A farm run with that CA (`mxfarm run --ca DIR`) presents certificates that a client
/// trusting it verifies, over TCP, by hostname and by address.
#[tokio::test]
async fn a_farm_signed_by_the_ca_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = farm_ca(dir.path());
    let scenario = Scenario::from_toml(
        "t.toml",
        "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nhostname = \"mx1.aol.test\"\ntls = \"valid\"\n",
    )
    .unwrap();
    let options = FarmOptions::ephemeral().ca(Arc::new(FarmCa::load(&ca).unwrap()));
    let farm = Farm::start_with(scenario, options).await.unwrap();
    for name in ["mx1.aol.test", "127.0.0.1"] {
        let mut plain = greeted(farm.addr("mx1")).await;
        plain.command("EHLO client.test").await;
        assert_eq!(plain.command("STARTTLS").await.code, 220);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let tls = tokio::time::timeout(GUARD, trusting(&ca).connect(name, plain.into_inner()))
            .await
            .expect("the handshake ends within the guard");
        assert!(tls.is_ok(), "{tls:?}");
    }
    farm.shutdown().await;
}

/// A scenario of hosts named outside the reserved domains, with a valid and a
/// wrong-hostname host.
const CORP: &str = r#"
name = "corp"
[[domain]]
name = "corp.example.com"
mx = [{ host = "mx1" }, { host = "mx2" }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.corp.example.com"
tls = "valid"
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
hostname = "mx2.corp.example.com"
tls = "wrong-hostname"
"#;

/// A STARTTLS handshake with `host` of `farm`, as a client that trusts `ca_pem` and
/// connects to `name`; the client's error, if it refused.
async fn starttls(farm: &Farm, host: &str, ca_pem: &[u8], name: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let mut plain = greeted(farm.addr(host)).await;
    plain.command("EHLO client.test").await;
    assert_eq!(plain.command("STARTTLS").await.code, 220);
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(
        GUARD,
        trusting(dir.path()).connect(name, plain.into_inner()),
    )
    .await
    .expect("the handshake ends within the guard")
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// The CA a farm makes for its run may sign for its scenario's own names too, so its
/// hosts verify whatever they are called; a wrong-hostname host still fails for its name,
/// not for the constraints.
#[tokio::test]
async fn the_ca_of_a_run_signs_for_its_scenario_s_names() {
    let farm = Farm::start_ephemeral(Scenario::from_toml("corp.toml", CORP).unwrap())
        .await
        .unwrap();
    let ca = farm.ca_certificate_pem().as_bytes().to_vec();
    assert_eq!(
        starttls(&farm, "mx1", &ca, "mx1.corp.example.com").await,
        Ok(())
    );
    let wrong = starttls(&farm, "mx2", &ca, "mx2.corp.example.com")
        .await
        .unwrap_err();
    assert!(wrong.contains("NotValidForName"), "{wrong}");
    assert!(!farm.ca().scope().unwrap().permits_name("www.example.com"));
    farm.shutdown().await;
}

/// `mxfarm ca --scenario FILE DIR` makes a CA that signs for that scenario's names as
/// well; a CA made without it cannot, and the farm says so when it starts, with what to
/// do, rather than presenting certificates every client refuses.
#[tokio::test]
async fn a_ca_made_for_a_scenario_signs_for_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let scenario_file = dir.path().join("corp.toml");
    std::fs::write(&scenario_file, CORP).unwrap();
    let scenario = Scenario::from_toml("corp.toml", CORP).unwrap();

    let plain_ca = farm_ca(dir.path());
    let options = FarmOptions::ephemeral().ca(Arc::new(FarmCa::load(&plain_ca).unwrap()));
    let refused = Farm::start_with(scenario.clone(), options)
        .await
        .unwrap_err();
    let refused = refused.to_string();
    assert!(
        refused.contains("host mx1: the farm's CA may not sign for mx1.corp.example.com"),
        "{refused}"
    );
    assert!(
        refused.contains("mxfarm ca --force DIR --scenario FILE"),
        "{refused}"
    );

    let corp_ca = dir.path().join("corp-ca");
    let said = succeeded(&mxfarm_ca(
        &["--scenario", scenario_file.to_str().unwrap()],
        &corp_ca,
    ));
    assert!(said.contains(".corp.example.com"), "{said}");
    let options = FarmOptions::ephemeral().ca(Arc::new(FarmCa::load(&corp_ca).unwrap()));
    let farm = Farm::start_with(scenario, options).await.unwrap();
    let ca = std::fs::read(corp_ca.join("ca.pem")).unwrap();
    assert_eq!(
        starttls(&farm, "mx1", &ca, "mx1.corp.example.com").await,
        Ok(())
    );
    farm.shutdown().await;
    // Its scope is no wider than that.
    let minted = minted_with_the_key_of(&corp_ca, &["www.example.com"]);
    let refused = handshake_with(&corp_ca, minted, "www.example.com")
        .await
        .unwrap_err();
    assert!(refused.contains("NameConstraintViolation"), "{refused}");
}
