//! STARTTLS over real TCP with a real TLS client (rustls), and lettre delivering over it.

use std::sync::Arc;
use std::time::Duration;

use mxfarm::journal::{ClosedBy, TlsOutcome};
use mxfarm::testing::{GUARD, Reply, SmtpClient, Stream};
use mxfarm::{EventKind, Farm};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{command_arrived, connection_closed, farm, greeted};

fn host(tls: &str) -> String {
    format!(
        r#"
name = "tls"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.tls.test"
tls = {tls}
"#
    )
}

/// A rustls client that trusts only the farm's CA.
fn connector(farm: &Farm, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca =
        rustls::pki_types::CertificateDer::from_pem_slice(farm.ca_certificate_pem().as_bytes())
            .unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Connects, says EHLO, and sends STARTTLS; returns the plaintext client, the EHLO reply
/// and the STARTTLS reply.
async fn up_to_starttls(farm: &Farm) -> (SmtpClient, Reply, Reply) {
    let mut plain = greeted(farm.addr("mx1")).await;
    let ehlo = plain.command("EHLO client.test").await;
    let ready = plain.command("STARTTLS").await;
    (plain, ehlo, ready)
}

async fn handshake(
    farm: &Farm,
    plain: SmtpClient,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<Box<dyn Stream>>> {
    let name = ServerName::try_from("mx1.tls.test").unwrap();
    tokio::time::timeout(
        GUARD,
        connector(farm, versions).connect(name, plain.into_inner()),
    )
    .await
    .expect("handshake within the test guard")
}

/// The session after a handshake, with the same guard as over TCP.
fn over_tls(tls: TlsStream<Box<dyn Stream>>) -> SmtpClient {
    SmtpClient::over(tls).with_guard(Some(GUARD))
}

fn all_versions() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

fn handshake_event(farm: &Farm) -> TlsOutcome {
    farm.journal()
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::TlsHandshake { outcome, .. } => Some(outcome),
            _ => None,
        })
        .expect("a TLS handshake event")
}

#[tokio::test]
async fn a_valid_certificate_verifies_and_the_session_starts_over() {
    let farm = farm(&host("\"valid\"")).await;
    let (plain, ehlo, ready) = up_to_starttls(&farm).await;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo}");
    assert_eq!(ready.text(), "220 2.0.0 Ready to start TLS");
    let tls = handshake(&farm, plain, &all_versions())
        .await
        .expect("handshake");
    let mut tls = over_tls(tls);
    // RFC 3207: the client must say EHLO again, and STARTTLS is no longer offered.
    tls.send("MAIL FROM:<a@x.test>\r\n").await;
    tls.expect("503 5.5.1 Error: send HELO/EHLO first").await;
    let ehlo = tls.command("EHLO client.test").await;
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo}");
    let sent = tls
        .transaction("a@x.test", &["b@y.test"], "Subject: secret\r\n\r\n")
        .await;
    assert!(sent.delivered(), "{}", tls.conversation());
    assert!(farm.messages()[0].tls, "the message arrived over TLS");
    match handshake_event(&farm) {
        TlsOutcome::Established {
            version,
            cipher,
            sni,
        } => {
            assert_eq!(version, "TLSv1_3");
            assert!(cipher.starts_with("TLS13_"), "{cipher}");
            assert_eq!(sni.as_deref(), Some("mx1.tls.test"));
        }
        other => panic!("{other:?}"),
    }
    farm.shutdown().await;
}

#[tokio::test]
async fn each_bad_certificate_fails_verification_as_it_should() {
    let cases = [
        ("\"expired\"", "Expired"),
        ("\"not-yet-valid\"", "NotValidYet"),
        ("\"wrong-hostname\"", "NotValidForName"),
        ("\"self-signed\"", "UnknownIssuer"),
        ("\"unknown-ca\"", "UnknownIssuer"),
    ];
    for (mode, expected) in cases {
        let farm = farm(&host(mode)).await;
        let (plain, _, ready) = up_to_starttls(&farm).await;
        assert_eq!(ready.text(), "220 2.0.0 Ready to start TLS");
        let error = handshake(&farm, plain, &all_versions()).await.unwrap_err();
        assert!(
            format!("{error:?}").contains(expected),
            "{mode}: expected {expected}, got {error:?}"
        );
        connection_closed(&farm, 1).await;
        match handshake_event(&farm) {
            TlsOutcome::Failed { aborted_by, error } => {
                assert_eq!(aborted_by, ClosedBy::Client, "{mode}: {error}");
            }
            other => panic!("{mode}: {other:?}"),
        }
        farm.shutdown().await;
    }
}

#[tokio::test]
async fn restricted_protocol_versions() {
    let farm = farm(&host(r#"{ mode = "valid", versions = "1.2" }"#)).await;
    let (plain, _, _) = up_to_starttls(&farm).await;
    let only13 = handshake(&farm, plain, &[&rustls::version::TLS13]).await;
    assert!(
        only13.is_err(),
        "a TLS 1.3-only client cannot talk to a 1.2-only host"
    );

    let (plain, _, _) = up_to_starttls(&farm).await;
    let tls = handshake(&farm, plain, &all_versions()).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    farm.shutdown().await;
}

fn faulty(then: &str) -> String {
    format!(
        r#"{}
[[host.rule]]
stage = "starttls"
then = {then}
"#,
        host("\"valid\"")
    )
}

#[tokio::test]
async fn starttls_refused_with_454() {
    let farm = farm(&faulty(
        r#"{ reply = "454 4.7.0 TLS not available due to temporary reason" }"#,
    ))
    .await;
    let (mut plain, _, ready) = up_to_starttls(&farm).await;
    assert_eq!(
        ready.text(),
        "454 4.7.0 TLS not available due to temporary reason"
    );
    // The session goes on in plaintext.
    plain.send("MAIL FROM:<a@x.test>\r\n").await;
    plain.expect_code(250).await;
    farm.shutdown().await;
}

#[tokio::test]
async fn each_handshake_fault_fails_the_client_as_expected() {
    let cases = [
        (r#""close-after-ready""#, "close"),
        (r#""alert""#, "HandshakeFailure"),
        (r#""close-mid-handshake""#, "close"),
        (r#""garbage""#, "InvalidMessage"),
    ];
    for (fault, expected) in cases {
        let farm = farm(&faulty(&format!("{{ tls-fault = {fault} }}"))).await;
        let (plain, _, ready) = up_to_starttls(&farm).await;
        assert_eq!(ready.text(), "220 2.0.0 Ready to start TLS", "{fault}");
        let error = handshake(&farm, plain, &all_versions()).await.unwrap_err();
        let text = format!("{error:?} {error}");
        let matched = match expected {
            "close" => {
                error.kind() == std::io::ErrorKind::UnexpectedEof
                    || error.kind() == std::io::ErrorKind::ConnectionReset
            }
            other => text.contains(other),
        };
        assert!(matched, "{fault}: expected {expected}, got {text}");
        connection_closed(&farm, 1).await;
        farm.shutdown().await;
    }
}

#[tokio::test]
async fn a_hang_in_the_handshake_ends_by_farm_time() {
    let farm = farm(&faulty(r#"{ tls-fault = { hang = "10m" } }"#)).await;
    let (plain, _, _) = up_to_starttls(&farm).await;
    let name = ServerName::try_from("mx1.tls.test").unwrap();
    let connecting = tokio::spawn({
        let connector = connector(&farm, &all_versions());
        async move { connector.connect(name, plain.into_inner()).await }
    });
    command_arrived(&farm, "STARTTLS").await;
    farm.advance(Duration::from_secs(600));
    let result = tokio::time::timeout(GUARD, connecting)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "the handshake never completed");
    let closed = connection_closed(&farm, 1).await;
    assert!(closed.at >= Duration::from_secs(600));
    farm.shutdown().await;
}

#[tokio::test]
async fn starttls_offered_on_some_connections_only() {
    let farm = farm(&format!(
        r#"{}
[[host.rule]]
stage = "ehlo"
when = {{ connection = "1" }}
then = {{ hide-starttls = true }}
"#,
        host("\"valid\"")
    ))
    .await;
    let (_, first, refused) = up_to_starttls(&farm).await;
    assert!(!first.text().contains("STARTTLS"), "{first}");
    assert_eq!(
        refused.text(),
        "454 4.7.0 TLS not available due to temporary reason"
    );
    let (_, second, ready) = up_to_starttls(&farm).await;
    assert!(second.text().contains("STARTTLS"), "{second}");
    assert_eq!(ready.text(), "220 2.0.0 Ready to start TLS");
    farm.shutdown().await;
}

#[tokio::test]
async fn tls_required_defers_plaintext_senders_and_accepts_after_starttls() {
    let farm = farm(&format!(
        r#"{}
[[host.rule]]
stage = "mail"
when = {{ tls = false }}
then = {{ reply = "530 5.7.0 Must issue a STARTTLS command first" }}
"#,
        host("\"valid\"")
    ))
    .await;
    let (plain, _, _) = up_to_starttls(&farm).await;
    let mut tls = over_tls(handshake(&farm, plain, &all_versions()).await.unwrap());
    tls.command("EHLO client.test").await;
    tls.send("MAIL FROM:<a@x.test>\r\n").await;
    tls.expect("250 2.1.0 Ok").await;

    let mut plain = greeted(farm.addr("mx1")).await;
    plain.command("EHLO client.test").await;
    plain.send("MAIL FROM:<a@x.test>\r\n").await;
    plain
        .expect("530 5.7.0 Must issue a STARTTLS command first")
        .await;
    farm.shutdown().await;
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_refused() {
    let farm = farm(&host("\"valid\"")).await;
    let mut plain = greeted(farm.addr("mx1")).await;
    plain.command("EHLO client.test").await;
    plain
        .send("STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
        .await;
    plain
        .expect("554 5.5.1 Error: commands pipelined after STARTTLS are refused")
        .await;
    let journal = farm.journal();
    assert!(
        !journal.iter().any(
            |e| matches!(&e.kind, EventKind::Command { line, .. } if line.contains("injected"))
        ),
        "the injected command was never read as a command"
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn lettre_delivers_over_starttls_when_it_trusts_the_farm_ca() {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let farm = farm(&host("\"valid\"")).await;
    let addr = farm.addr("mx1");
    let ca = Certificate::from_pem(farm.ca_certificate_pem().as_bytes()).unwrap();
    let parameters = TlsParameters::builder("mx1.tls.test".to_string())
        .add_root_certificate(ca)
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(Tls::Required(parameters))
        .build();
    let message = Message::builder()
        .from("sender@example.test".parse().unwrap())
        .to("bob@tls.test".parse().unwrap())
        .subject("over TLS")
        .body(String::from("hello\r\n"))
        .unwrap();
    mailer.send(message).await.expect("delivered over STARTTLS");
    let messages = farm.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
    farm.shutdown().await;
}

#[tokio::test]
async fn a_host_can_present_a_certificate_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["mx1.tls.test".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let tls = format!(
        r#"{{ cert = "{}", key = "{}" }}"#,
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let farm = farm(&host(&tls)).await;
    // Trust exactly that certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (plain, _, _) = up_to_starttls(&farm).await;
    let name = ServerName::try_from("mx1.tls.test").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, plain.into_inner())
        .await
        .expect("the file certificate is presented");
    farm.shutdown().await;
}
