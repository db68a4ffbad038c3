//! A session over an in-memory stream, for the unit tests of each piece: a host from
//! scenario text, the farm's env, and a scripted client on the other end. Run them under
//! paused time: there is no socket, so delays, hangs and timeouts take no real time.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::Inbox;
use crate::clock::Clock;
use crate::journal::{Event, EventKind, Journal};
use crate::policy::PolicyState;
use crate::scenario::Scenario;
use crate::smtp::{Env, HostRuntime, start_session};
use crate::testing::SmtpClient;
use crate::tls::{self, FarmCa};

/// One host and what its sessions share; `connect` opens sessions to it.
pub(crate) struct Harness {
    pub env: Env,
    pub host: Arc<HostRuntime>,
    pub ca: FarmCa,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// A host `mx1` (hostname `mx1.farm.test`) with these extra keys and rules.
pub(crate) fn host(extra: &str) -> Harness {
    let text = format!(
        "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n\
         hostname = \"mx1.farm.test\"\n{extra}"
    );
    let scenario = Scenario::from_toml("t.toml", &text).unwrap();
    let clock = Clock::new();
    let journal = Arc::new(Journal::new(clock.clone(), 10_000));
    let inbox = Arc::new(Inbox::new(journal.clone(), scenario.capture.clone()));
    let ca = FarmCa::generate().unwrap();
    let config = scenario.hosts[0].clone();
    let acceptor = tls::acceptor(&config, [127, 0, 0, 1].into(), &ca).unwrap();
    let policy = PolicyState::for_scenario(&scenario);
    Harness {
        env: Env::new(clock, journal, inbox),
        host: HostRuntime::new(config, acceptor, policy),
        ca,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    }
}

impl Harness {
    /// A new session, and the client's end of its stream.
    pub(crate) fn connect(&self) -> SmtpClient {
        SmtpClient::over(self.connect_raw())
    }

    pub(crate) fn connect_raw(&self) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        start_session(
            &self.env,
            &self.host,
            theirs,
            client,
            &self.shutdown,
            &self.tasks,
        );
        ours
    }

    /// A session that has been greeted and said EHLO.
    pub(crate) async fn ready(&self) -> SmtpClient {
        let mut client = self.connect();
        client.greeting().await;
        client.ehlo("client.test").await;
        client
    }

    pub(crate) fn journal(&self) -> Vec<Event> {
        self.env.journal.events()
    }

    /// The reason the journal gives for the end of connection `conn`.
    pub(crate) fn closed_reason(&self, conn: u64) -> Option<String> {
        self.journal().into_iter().find_map(|e| match e.kind {
            EventKind::ConnectionClosed {
                conn: c, reason, ..
            } if c == conn => Some(reason),
            _ => None,
        })
    }

    /// Waits until every session has ended.
    pub(crate) async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
