//! Farms from scenario text, the waits tests share, and the openings most tests start with.

use std::net::SocketAddr;

use mxfarm::testing::{GUARD, SmtpClient};
use mxfarm::{EventKind, Farm, Scenario};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

// MIGRATION: the old client, until every file uses mxfarm::testing.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to the farm");
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// Connects and reads the greeting, which must start with `220`.
    pub async fn greeted(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting:?}");
        client
    }

    /// Sends bytes exactly as given, in one write.
    pub async fn send(&mut self, bytes: &str) {
        self.send_bytes(bytes.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write to the farm");
    }

    /// Reads one whole reply (all its lines), CRLFs included.
    pub async fn reply(&mut self) -> String {
        tokio::time::timeout(mxfarm::testing::GUARD, async {
            let mut reply = String::new();
            loop {
                let mut line = String::new();
                let n = self.stream.read_line(&mut line).await.expect("read reply");
                assert!(n > 0, "connection closed; reply so far: {reply:?}");
                reply.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return reply;
                }
            }
        })
        .await
        .expect("no reply within the test guard")
    }

    /// Sends `command` and returns its reply.
    pub async fn ask(&mut self, command: &str) -> String {
        self.send(command).await;
        self.reply().await
    }

    /// Whether the farm closed the connection (reads EOF) without sending anything else.
    pub async fn closed(&mut self) -> bool {
        tokio::time::timeout(mxfarm::testing::GUARD, async {
            let mut rest = String::new();
            match self.stream.read_line(&mut rest).await {
                Ok(0) => true,
                Ok(_) => panic!("expected the connection to close, got {rest:?}"),
                Err(_) => true,
            }
        })
        .await
        .expect("connection still open after the test guard")
    }
}

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
