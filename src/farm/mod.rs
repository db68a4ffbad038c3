//! A running farm: one listener per host, the shared clock, journal, inbox and policy
//! state, and a clean shutdown. The farm starts everything and hands each part what it
//! needs; nothing below it knows the farm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio_util::task::TaskTracker;

use crate::assertions::DeliveryExpectation;
use crate::capture::{Inbox, Message};
use crate::clock::Clock;
use crate::deliveries::{Deliveries, deliveries};
use crate::dns::DnsService;
use crate::journal::{Cursor, Event, Journal, JournalFileOptions, Read};
use crate::policy::PolicyState;
use crate::scenario::Scenario;
use crate::smtp::{Env, Listening, Shutdown, start_session};
use crate::tls::{self, FarmCa};
use crate::transcript::Transcript;

/// Where the hosts listen.
#[derive(Debug, Clone, Default)]
pub struct FarmOptions {
    /// Bind every host to `127.0.0.1:0` (an ephemeral port each), as tests want.
    pub ephemeral_ports: bool,
    /// Listen addresses that replace the scenario's, by host name.
    pub bind: HashMap<String, SocketAddr>,
    /// The CA that signs the hosts' certificates; a new one is made when `None`.
    pub ca: Option<Arc<FarmCa>>,
    /// The journal file, if the farm writes one.
    pub journal_file: Option<JournalFileOptions>,
    /// Where the farm's DNS server answers (UDP and TCP), if it runs one.
    pub dns: Option<SocketAddr>,
}

impl FarmOptions {
    /// Every host on `127.0.0.1` with a port the system picks.
    pub fn ephemeral() -> Self {
        Self {
            ephemeral_ports: true,
            ..Self::default()
        }
    }

    /// Sign the hosts' certificates with this CA (e.g. one loaded with [`FarmCa::load`]),
    /// so that senders which already trust it accept them.
    pub fn ca(mut self, ca: Arc<FarmCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Write every journal event to a file as JSON lines, as it happens: the file is
    /// created (or replaced) at the start, holds every event in order whatever
    /// `[journal] max-events` keeps in memory, and has each accepted message's line
    /// before the client gets its 250.
    ///
    /// The file is written by a thread of its own, which tokio's paused time does not
    /// see: under `start_paused`, a session waiting for its line lets the clock jump.
    /// Use a journal file with real time (and real sockets), as `mxfarm run` does.
    pub fn journal_file(mut self, file: JournalFileOptions) -> Self {
        self.journal_file = Some(file);
        self
    }

    /// Run the farm's DNS server on `addr` (UDP and TCP; port 0 picks a free port, the
    /// same for both), answering for the scenario's zones: see [`Farm::dns_addr`].
    pub fn dns(mut self, addr: SocketAddr) -> Self {
        self.dns = Some(addr);
        self
    }

    /// Listen on `addr` instead of the scenario's address for `host`.
    pub fn bind(mut self, host: &str, addr: SocketAddr) -> Self {
        self.bind.insert(host.to_string(), addr);
        self
    }
}

/// Why a farm could not start.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    #[error(
        "host {host} cannot listen on {addr}: {source}\n  help: another program (or another farm) may use that port; \
         pick another with --bind {host}=127.0.0.1:PORT, or ports below 1024 need root"
    )]
    Bind {
        host: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--bind names host {host:?}, which the scenario does not have (it has: {known})")]
    UnknownHost { host: String, known: String },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "cannot write the journal to {path}: {source}\n  help: check that the directory exists, is writable and has room"
    )]
    JournalFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the journal: {0}\n  help: check that the file system has room and that no file size limit applies"
    )]
    JournalUnwritable(crate::journal::Unwritable),
    #[error("the farm is shutting down\n  help: start a new farm with the scenario instead")]
    ShuttingDown,
    #[error(
        "the DNS server cannot listen on {addr}: {source}\n  help: port 53 needs root (or CAP_NET_BIND_SERVICE), and a local resolver (systemd-resolved on 127.0.0.53) may hold it; pick another address with --dns 127.0.0.1:5353"
    )]
    DnsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the journal's events take in memory ([`Farm::journal_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalMemory {
    /// Events held (at most `[journal] max-events`).
    pub events: usize,
    /// Heap bytes they take, reserved room included, and long recipient lists counted
    /// whole though the capture shares them.
    pub bytes: usize,
}

/// A host as it is bound.
#[derive(Debug, Clone)]
pub struct BoundHost {
    pub name: String,
    pub hostname: String,
    pub addr: SocketAddr,
    /// The address it was asked to listen on (port 0: any): a replaced scenario that
    /// asks the same keeps the listener.
    requested: SocketAddr,
    listening: Arc<Listening>,
}

/// A running farm. Dropping it stops accepting but does not wait for open sessions;
/// call [`Farm::shutdown`] for a clean end.
#[derive(Debug)]
pub struct Farm {
    core: Arc<Core>,
    /// False for the handles the control API holds ([`Farm::share`]): dropping one of
    /// those stops nothing.
    owner: bool,
}

/// Everything a running farm is, shared by the farm and the handles of its control API.
#[derive(Debug)]
struct Core {
    journal: Arc<Journal>,
    inbox: Arc<Inbox>,
    clock: Clock,
    shutdown: Shutdown,
    ca: Arc<FarmCa>,
    tasks: TaskTracker,
    /// Where hosts listen, as the farm was started: a replaced scenario's hosts too.
    placement: Placement,
    /// What the farm plays now; [`Farm::replace_scenario`] swaps it whole.
    running: parking_lot::RwLock<Running>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
}

/// The listen addresses a farm was started with.
#[derive(Debug, Clone)]
struct Placement {
    bind: HashMap<String, SocketAddr>,
    ephemeral_ports: bool,
}

impl Placement {
    /// Where `host` is to listen.
    fn addr_of(&self, host: &crate::scenario::Host) -> SocketAddr {
        match self.bind.get(&host.name) {
            Some(addr) => *addr,
            None if self.ephemeral_ports => SocketAddr::from(([127, 0, 0, 1], 0)),
            None => host.listen,
        }
    }
}

/// The scenario a farm plays and everything built from it.
#[derive(Debug, Clone)]
struct Running {
    scenario: Arc<Scenario>,
    hosts: Arc<[BoundHost]>,
    env: Env,
    policy: Arc<PolicyState>,
    dns: Option<Arc<DnsService>>,
}

mod control;
mod replace;
mod start;
mod summary;

pub use crate::policy::greylist::{GreylistEntry, WhitelistEntry};
pub use control::{HostStatus, ReplyCounts, ResetScope};
pub use replace::{Replaced, StateOnReplace};

impl Farm {
    /// What the farm plays now.
    fn running(&self) -> Running {
        self.core.running.read().clone()
    }

    /// Another handle on this farm, for the control API: it reads and controls the
    /// same farm, and dropping it stops nothing. Only the farm itself shuts down.
    pub(crate) fn share(&self) -> Farm {
        Farm {
            core: self.core.clone(),
            owner: false,
        }
    }

    /// Starts every host on the address its scenario gives.
    pub async fn start(scenario: Scenario) -> Result<Farm, FarmError> {
        Self::start_with(scenario, FarmOptions::default()).await
    }

    /// Starts every host on `127.0.0.1` on ports the system picks, as tests want.
    pub async fn start_ephemeral(scenario: Scenario) -> Result<Farm, FarmError> {
        Self::start_with(scenario, FarmOptions::ephemeral()).await
    }

    /// Where the farm's DNS server answers, if it runs one ([`FarmOptions::dns`]).
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.running().dns.as_deref().map(DnsService::addr)
    }

    /// The CA that signed the hosts' certificates, as PEM: what a sender must trust for
    /// `valid` hosts to verify.
    pub fn ca_certificate_pem(&self) -> &str {
        self.core.ca.cert_pem()
    }

    /// The farm's CA, e.g. to write it out for a sender's trust store.
    pub fn ca(&self) -> &Arc<FarmCa> {
        &self.core.ca
    }

    /// The scenario the farm plays now.
    pub fn scenario(&self) -> Arc<Scenario> {
        self.running().scenario
    }

    /// Every host with the address it is bound to, in scenario order.
    pub fn hosts(&self) -> Arc<[BoundHost]> {
        self.running().hosts
    }

    /// The address `host` listens on, if the scenario has that host.
    pub fn try_addr(&self, host: &str) -> Option<SocketAddr> {
        self.hosts().iter().find(|h| h.name == host).map(|h| h.addr)
    }

    /// The address `host` listens on.
    ///
    /// # Panics
    /// If the scenario has no host of that name: a mistake in the test, named in the panic.
    pub fn addr(&self, host: &str) -> SocketAddr {
        match self.try_addr(host) {
            Some(addr) => addr,
            None => {
                let hosts = self.hosts();
                let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                panic!("the farm has no host {host:?}; it has {known:?}")
            }
        }
    }

    /// A connection to `host` through memory instead of a socket, as if from `client`.
    /// Returns `None` if the scenario has no such host.
    ///
    /// The session is the same as over TCP; only the stream differs. With no kernel
    /// socket involved, a test can run under tokio's paused time
    /// (`#[tokio::test(start_paused = true)]`), where the runtime jumps the clock whenever
    /// every task waits, so delays, hangs and timeouts take no real time at all. Over real
    /// sockets, paused time is unsafe: the clock jumps while a socket waits for bytes.
    pub fn connect_in_memory(&self, host: &str, client: SocketAddr) -> Option<DuplexStream> {
        let hosts = self.hosts();
        let (runtime, env) = hosts.iter().find(|h| h.name == host)?.listening.current();
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        start_session(
            &env,
            &runtime,
            theirs,
            client,
            &self.core.shutdown,
            &self.core.tasks,
        );
        Some(ours)
    }

    /// Every event still in the journal, oldest first.
    pub fn journal(&self) -> Vec<Event> {
        self.core.journal.events()
    }

    /// What the journal's events take in memory now: how many it holds and the heap
    /// bytes they take (the `farm-started` header aside). Events are kept encoded, a
    /// few dozen bytes each; BENCHMARKS.md has the figures.
    pub fn journal_memory(&self) -> JournalMemory {
        let (bytes, events) = self.core.journal.footprint();
        JournalMemory { events, bytes }
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.core.journal.last_seq()
    }

    /// A reader of the events recorded from now on, as they happen.
    pub fn subscribe(&self) -> Cursor {
        self.events_after(self.core.journal.last_seq())
    }

    /// A reader of the events after sequence number `seq` (0: from the first one still
    /// held), then of every event as it is recorded. It never skips an event silently:
    /// events dropped before it read them are counted in [`Read::Missed`].
    pub fn events_after(&self, seq: u64) -> Cursor {
        Cursor::new(self.core.journal.clone(), seq)
    }

    /// Waits until the journal holds an event for which `matches` is true, and returns it.
    /// Already recorded events count, so there is no race with what happened before.
    ///
    /// Tests use it to act at the right moment, e.g. to [`advance`](Self::advance) the
    /// clock once a command has arrived, instead of sleeping.
    pub async fn wait_for(&self, mut matches: impl FnMut(&Event) -> bool) -> Event {
        let mut cursor = self.events_after(0);
        loop {
            match cursor.next().await {
                Some(Read::Event(event)) if matches(&event) => return event,
                Some(_) => {}
                // The farm is gone; what it recorded is all there is.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Why the journal file cannot be written, once a write to it failed: from then on
    /// the farm answers every message 451 4.3.0. `None` while it is fine (or there is
    /// no file).
    pub fn journal_file_failure(&self) -> Option<String> {
        self.core.journal.file_failure().map(|why| why.to_string())
    }

    /// Each message to each recipient with its delivery attempts, derived from the
    /// journal, and the contacts tied to no message.
    pub fn deliveries(&self) -> Deliveries {
        deliveries(&self.journal())
    }

    /// The journal as a retry story: one block per delivery, stable between runs.
    /// Snapshot `farm.transcript().render(Granularity::Seconds)` with `insta` to pin a
    /// sender's retry behaviour.
    pub fn transcript(&self) -> Transcript {
        Transcript::from_events(&self.journal())
    }

    /// Findings on the sender's retry behaviour: early retries, MX fallback, retries after
    /// a 5xx, hammering, backoff, duplicates.
    pub fn report(&self) -> crate::report::Report {
        crate::report::report_journal_until(&self.journal(), self.now())
    }

    /// Expectations on the delivery of the one message `sender` sent to `recipient`,
    /// checked now; a failed one panics with the delivery's transcript. When the sender
    /// sent that recipient several messages, name one with [`Farm::expect_delivery_of`].
    pub fn expect_delivery(&self, sender: &str, recipient: &str) -> DeliveryExpectation {
        let events = self.journal();
        let report = crate::report::report_journal_until(&events, self.now());
        DeliveryExpectation::new(sender, recipient, Transcript::from_events(&events), report)
    }

    /// Expectations on the delivery to `recipient` of the message whose Message-ID is
    /// `message_id` (with or without `<>`), checked now.
    pub fn expect_delivery_of(&self, message_id: &str, recipient: &str) -> DeliveryExpectation {
        let events = self.journal();
        let report = crate::report::report_journal_until(&events, self.now());
        let transcript = Transcript::from_events(&events);
        DeliveryExpectation::of_message(message_id, recipient, transcript, report)
    }

    /// The messages the farm accepted and still keeps, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.core.inbox.messages()
    }

    /// Farm time now.
    pub fn now(&self) -> Duration {
        self.core.clock.now()
    }

    /// Moves farm time forward: delays, hangs, timeouts and attempt windows see it at once.
    ///
    /// # Panics
    /// If all advances together would pass [`Clock::MAX_OFFSET`] (a hundred years): a
    /// mistake in the test. [`Farm::try_advance`] refuses instead.
    pub fn advance(&self, by: Duration) {
        if let Err(too_far) = self.try_advance(by) {
            panic!("{too_far}");
        }
    }

    /// Whether the farm still takes connections: true until its shutdown begins.
    pub fn is_accepting(&self) -> bool {
        !self.core.shutdown.has_begun()
    }

    /// The farm's clock, for code that waits in farm time.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// How long [`Farm::shutdown`] gives sessions that cannot be told `421` to end.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// Stops accepting, tells every open session `421 4.3.2`, and waits until all ended
    /// (and the journal file has every event), ending those still busy after [`Farm::SHUTDOWN_GRACE`]: see
    /// [`Farm::shutdown_within`].
    pub async fn shutdown(self) {
        self.shutdown_within(Self::SHUTDOWN_GRACE).await;
    }

    /// Stops accepting, tells every session that waits for the client (for a command, in
    /// a tarpit) `421 4.3.2` and closes it, and waits until every session has ended.
    ///
    /// A session that cannot be told, because its client does not read its replies or is
    /// in the middle of a TLS handshake, has `grace` to finish; then it is ended where it
    /// stands, and the journal says so (closed by the farm, with the reason). So a stuck
    /// client holds the farm's exit for `grace`, not for its command timeout (minutes).
    ///
    /// The grace is farm time: under tokio's paused time with in-memory connections (see
    /// [`Farm::connect_in_memory`]) it passes at once when nothing else can run, so tests
    /// of a shutdown do not wait. A zero grace ends every session at once, even before
    /// its 421 is written.
    pub async fn shutdown_within(self, grace: Duration) {
        self.core.shutdown.begin();
        self.core.tasks.close();
        tokio::select! {
            () = self.core.tasks.wait() => {}
            () = self.core.clock.sleep(grace) => {
                self.core.shutdown.abort();
                self.core.tasks.wait().await;
            }
        }
        // After the sessions: a check still running in the grace period gets its answer.
        if let Some(dns) = self.running().dns {
            dns.shutdown().await;
        }
        self.core.journal.close();
        self.core.journal.file_finished().await;
    }
}

impl Drop for Farm {
    /// Stops accepting, and ends every journal reader once it has read what is there:
    /// a cursor or a journal file writer does not wait for a farm that is gone. A
    /// shared handle (the API's) stops nothing.
    fn drop(&mut self) {
        if self.owner {
            self.core.shutdown.begin();
            self.core.journal.close();
        }
    }
}
