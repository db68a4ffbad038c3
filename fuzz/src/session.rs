//! One fuzz input against a whole farm: a fresh farm per input (so that a crash replays
//! from its input alone), its sessions reached in memory under tokio's paused time (so
//! that greylisting delays, hangs and timeouts take no real time), and a client per
//! connection that sends what the script says while another task reads every reply.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mxfarm::tls::FarmCa;
use mxfarm::{Farm, FarmOptions, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};

use crate::checks;
use crate::script::{Script, Step, script};

/// How long a session may go on, in farm time, after its client stopped sending: far
/// beyond the farm's own bounds (a 5-minute command timeout, a 10-minute data timeout,
/// the fuzz scenarios' hangs). A session still open then is one a client holds for ever.
pub const MAX_AFTER_CLIENT: Duration = Duration::from_secs(3 * 24 * 3600);

/// Where the connections come from, in turn: two from one address, so that per-client
/// rules (rate limits, concurrency) meet more than one connection.
const CLIENTS: [&str; 3] = ["192.0.2.1:4001", "192.0.2.1:4002", "198.51.100.7:4003"];

/// A scenario to fuzz against, loaded once per process.
pub struct Target {
    scenario: Scenario,
    hosts: Vec<String>,
    /// Whether the replies at end-of-data are the farm's own `queued as N`, so that each
    /// one the client sees must be a journalled message.
    pub builtin_queued_replies: bool,
}

impl Target {
    /// Loads `toml` (a scenario shipped with the fuzz crate); panics if it does not load,
    /// which is a mistake in the fuzz crate, found on its first run.
    pub fn new(name: &str, toml: &str) -> Target {
        let scenario = Scenario::from_toml(name, toml)
            .unwrap_or_else(|e| panic!("the fuzz scenario {name} does not load:\n{e}"));
        let hosts = scenario.hosts.iter().map(|h| h.name.clone()).collect();
        Target {
            scenario,
            hosts,
            builtin_queued_replies: true,
        }
    }

    /// Runs one input: a new farm, the client's script, then every check; returns what
    /// each connection received.
    pub fn run(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let script = script(data);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        runtime.block_on(self.run_script(&script))
    }

    async fn run_script(&self, script: &Script) -> Vec<Vec<u8>> {
        let options = FarmOptions::ephemeral().ca(ca());
        let farm = Farm::start_with(self.scenario.clone(), options)
            .await
            .expect("the fuzz farm starts");
        let replies = drive(&farm, &self.hosts, script).await;
        let events = farm.journal();
        // Shutting down waits for every session; they have all ended by now.
        if tokio::time::timeout(MAX_AFTER_CLIENT, farm.shutdown())
            .await
            .is_err()
        {
            panic!("the farm did not shut down");
        }
        checks::farm_journal(&events, &replies, self.builtin_queued_replies);
        replies
    }
}

/// One CA for the whole process: making one per input would only cost time.
fn ca() -> Arc<FarmCa> {
    static CA: OnceLock<Arc<FarmCa>> = OnceLock::new();
    CA.get_or_init(|| Arc::new(FarmCa::generate().expect("a CA")))
        .clone()
}

/// A connection as the client holds it: the half it writes, until the farm closes it or
/// the script ends it, and the task that reads every reply.
struct Connection {
    writer: Option<WriteHalf<tokio::io::DuplexStream>>,
    replies: tokio::task::JoinHandle<Vec<u8>>,
}

/// Plays `script` against the farm's hosts (connection i goes to host i mod n), and
/// returns what each connection received, once every session has ended.
async fn drive(farm: &Farm, hosts: &[String], script: &Script) -> Vec<Vec<u8>> {
    let mut connections = vec![connect(farm, hosts, 0)];
    for step in &script.steps {
        let current = connections.len() - 1;
        match step {
            Step::Send(bytes) => {
                if let Some(writer) = &mut connections[current].writer {
                    // An error means the farm closed the connection: nothing more to say.
                    if writer.write_all(bytes).await.is_err() {
                        connections[current].writer = None;
                    }
                }
            }
            Step::Wait(wait) if wait.is_zero() => tokio::task::yield_now().await,
            Step::Wait(wait) => tokio::time::sleep(*wait).await,
            Step::Connect => connections.push(connect(farm, hosts, connections.len())),
            Step::EndInput => end_input(&mut connections[current]).await,
        }
    }
    if !script.hold_open {
        for connection in &mut connections {
            end_input(connection).await;
        }
    }
    let mut replies = Vec::new();
    for (i, connection) in connections.into_iter().enumerate() {
        match tokio::time::timeout(MAX_AFTER_CLIENT, connection.replies).await {
            Ok(Ok(bytes)) => replies.push(bytes),
            Ok(Err(e)) => panic!("the reader of connection {i} failed: {e}"),
            Err(_) => panic!(
                "connection {i} was still open {MAX_AFTER_CLIENT:?} (farm time) after its client \
                 stopped sending: a client can hold the farm"
            ),
        }
    }
    replies
}

fn connect(farm: &Farm, hosts: &[String], i: usize) -> Connection {
    let host = &hosts[i % hosts.len()];
    let client: SocketAddr = CLIENTS[i % CLIENTS.len()].parse().expect("an address");
    let stream = farm
        .connect_in_memory(host, client)
        .expect("the scenario's own host");
    let (mut reader, writer) = tokio::io::split(stream);
    let replies = tokio::spawn(async move {
        let mut bytes = Vec::new();
        // An error (a reset) ends the replies like an EOF does.
        let _ = reader.read_to_end(&mut bytes).await;
        bytes
    });
    Connection {
        writer: Some(writer),
        replies,
    }
}

async fn end_input(connection: &mut Connection) {
    if let Some(mut writer) = connection.writer.take() {
        let _ = writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        let path = format!("{}/scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
        Target::new(name, &std::fs::read_to_string(path).unwrap())
    }

    fn seed(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/seeds/smtp/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn text(replies: &[Vec<u8>]) -> Vec<String> {
        replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// The harness really talks SMTP: a seed's message is queued and the session ends.
    #[test]
    fn a_seed_delivers_its_message() {
        let replies = text(&target("accept-all.toml").run(&seed("plain")));
        assert_eq!(replies.len(), 1);
        assert!(
            replies[0].contains("250 2.0.0 Ok: queued as 1"),
            "{}",
            replies[0]
        );
        assert!(replies[0].ends_with("221 2.0.0 Bye\r\n"), "{}", replies[0]);
    }

    /// Waits pass in paused time, connections are separate, and a connection held open
    /// meets the farm's own timeout.
    #[test]
    fn waits_connections_and_held_connections() {
        let rules = target("rules.toml");
        let replies = text(&rules.run(&seed("greylist-retry")));
        assert!(
            replies[0].contains("450 4.2.0"),
            "greylisted first: {}",
            replies[0]
        );
        assert!(
            replies[0].contains("queued as 1"),
            "passed after the wait: {}",
            replies[0]
        );
        let replies = text(&rules.run(&seed("timeouts")));
        assert!(
            replies[0].contains("421 4.4.2"),
            "timed out: {}",
            replies[0]
        );
        let replies = text(&rules.run(&seed("connections")));
        assert_eq!(replies.len(), 5, "{replies:?}");
    }
}
