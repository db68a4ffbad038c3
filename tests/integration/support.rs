//! Farms from scenario text, the waits tests share, and the openings most tests start with.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Output};

use mxfarm::testing::{GUARD, SmtpClient};
use mxfarm::{EventKind, Farm, Scenario};

/// A client past the greeting, which must be a 220.
pub async fn greeted(addr: SocketAddr) -> SmtpClient {
    let mut client = SmtpClient::connect(addr).await;
    client.greeting().await;
    client
}

/// A client past the greeting, `EHLO client.test` and an accepted `MAIL FROM:<from>`.
pub async fn mail_from(addr: SocketAddr, from: &str) -> SmtpClient {
    let mut client = greeted(addr).await;
    client.ehlo("client.test").await;
    client.send(format!("MAIL FROM:<{from}>\r\n")).await;
    client.expect_code(250).await;
    client
}

/// A `mxfarm run` child's startup summary, read from its piped stdout up to and with the
/// line `Ready.` (what a script waits for before it connects).
pub fn summary_until_ready(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut summary = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the summary is text");
        summary.push_str(&line);
        summary.push('\n');
        if line.starts_with("Ready.") {
            break;
        }
    }
    summary
}

/// Sends SIGTERM to a `mxfarm run` child, as a service manager stops it.
pub fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// SIGTERM, then what the child wrote once it ended.
pub fn terminate(child: Child) -> Output {
    sigterm(&child);
    child.wait_with_output().expect("the child ends")
}

/// A farm on ephemeral ports from scenario text.
pub async fn farm(toml: &str) -> Farm {
    let scenario = Scenario::from_toml("test.toml", toml).expect("test scenario is valid");
    Farm::start_ephemeral(scenario).await.expect("farm starts")
}

/// Waits until the farm journalled a command line starting with `prefix`.
pub async fn command_arrived(farm: &Farm, prefix: &str) {
    tokio::time::timeout(
        GUARD,
        farm.wait_for(
            |e| matches!(&e.kind, EventKind::Command { line, .. } if line.starts_with(prefix)),
        ),
    )
    .await
    .expect("the command never arrived");
}

/// Waits until the farm has read the final dot of a message on connection `conn`.
pub async fn dot_arrived(farm: &Farm, conn: u64) {
    tokio::time::timeout(
        GUARD,
        farm.wait_for(|e| {
            matches!(&e.kind, EventKind::Command { conn: c, line, .. } if *c == conn && line == ".")
        }),
    )
    .await
    .expect("the final dot never arrived");
}

/// Waits until the farm journalled the end of connection `conn`.
pub async fn connection_closed(farm: &Farm, conn: u64) -> mxfarm::Event {
    tokio::time::timeout(
        GUARD,
        farm.wait_for(
            |e| matches!(&e.kind, EventKind::ConnectionClosed { conn: c, .. } if *c == conn),
        ),
    )
    .await
    .expect("the connection never closed")
}

/// One host, no rules: accepts everything.
pub const PLAIN: &str = r#"
name = "plain"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
"#;
