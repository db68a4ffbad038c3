//! A session over an in-memory stream, for the unit tests of each piece: a host from
//! scenario text, the farm's env, and a scripted client on the other end. Run them under
//! paused time: there is no socket, so delays, hangs and timeouts take no real time.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::TaskTracker;

use crate::capture::Inbox;
use crate::clock::Clock;
use crate::journal::{Event, EventKind, Journal};
use crate::policy::PolicyState;
use crate::scenario::Scenario;
use crate::smtp::transport::Transport;
use crate::smtp::{Env, HostRuntime, Shutdown, start_session};
use crate::testing::SmtpClient;
use crate::tls::{self, FarmCa};

/// Where the harness's sessions come from unless a test says otherwise.
const TEST_CLIENT: &str = "192.0.2.1:4000";

/// One host and what its sessions share; `connect` opens sessions to it.
pub(crate) struct Harness {
    pub env: Env,
    pub host: Arc<HostRuntime>,
    pub ca: FarmCa,
    pub shutdown: Shutdown,
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
        env: Env::new(clock, journal, inbox, scenario.limits.max_buffered_data),
        host: HostRuntime::new(config, acceptor, policy),
        ca,
        shutdown: Shutdown::new(),
        tasks: TaskTracker::new(),
    }
}

impl Harness {
    /// A new session, and the client's end of its stream.
    pub(crate) fn connect(&self) -> SmtpClient {
        SmtpClient::over(self.connect_raw())
    }

    /// A new session whose reads of the client are counted: how many reads that got
    /// bytes the session has made so far.
    pub(crate) fn connect_counting_reads(&self) -> (SmtpClient, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = |theirs| CountedReads {
            inner: theirs,
            reads: reads.clone(),
        };
        let ours = self.serve(TEST_CLIENT.parse().unwrap(), counted);
        (SmtpClient::over(ours), reads)
    }

    pub(crate) fn connect_raw(&self) -> tokio::io::DuplexStream {
        self.connect_raw_from(TEST_CLIENT.parse().unwrap())
    }

    /// A new session as if from `client`.
    pub(crate) fn connect_raw_from(&self, client: SocketAddr) -> tokio::io::DuplexStream {
        self.serve(client, |theirs| theirs)
    }

    /// Starts a session from `client` over the session's end of an in-memory stream, as
    /// `wrap` makes it into a transport, and returns the client's end.
    fn serve<T: Transport>(
        &self,
        client: SocketAddr,
        wrap: impl FnOnce(tokio::io::DuplexStream) -> T,
    ) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        start_session(
            &self.env,
            &self.host,
            wrap(theirs),
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

    /// A client that sends `at_once`, then `slowly` one byte per `every` of farm time (a
    /// slowloris), reading all the farm says meanwhile, until the farm closes the
    /// connection; after the last byte it just waits.
    pub(crate) async fn trickle(&self, at_once: &[u8], slowly: &[u8], every: Duration) -> Trickled {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = self.env.clock.now();
        let (mut read, mut write) = tokio::io::split(self.connect_raw());
        let clock = self.env.clock.clone();
        let writer = async move {
            let mut sent = 0;
            if write.write_all(at_once).await.is_err() {
                return 0;
            }
            for &byte in slowly {
                clock.sleep(every).await;
                if write.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        };
        let mut replies = Vec::new();
        let reader = async {
            read.read_to_end(&mut replies).await.unwrap();
            self.env.clock.now()
        };
        let (sent, closed_at) = tokio::join!(writer, reader);
        Trickled {
            replies: String::from_utf8_lossy(&replies).into_owned(),
            sent,
            lasted: closed_at - started,
        }
    }

    /// Waits until every session has ended.
    pub(crate) async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What a trickling client saw: the replies, how many of its slow bytes went out before
/// the farm closed the connection, and how long (farm time) the connection lasted.
#[derive(Debug)]
pub(crate) struct Trickled {
    pub replies: String,
    pub sent: usize,
    pub lasted: Duration,
}

/// The log lines (info and above) of this thread's sessions while this lives, as the
/// farm's text format writes them without colours. A paused-time test runs its sessions
/// on its own thread, so it sees theirs and no other test's.
///
/// One global subscriber writes every test's lines to its own thread's `Logs`, if any:
/// subscribers set per thread would race with the cache of which log lines anyone
/// listens to, when tests on other threads log for the first time meanwhile.
pub(crate) struct Logs {
    written: Arc<Mutex<Vec<u8>>>,
}

thread_local! {
    static CAPTURING: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Where the global subscriber writes: the `Logs` of the thread that logs, or nowhere.
struct ThisThread;

impl std::io::Write for ThisThread {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURING.with(|capturing| {
            if let Some(written) = capturing.borrow().as_ref() {
                written.lock().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture() -> Self {
        static SUBSCRIBER: std::sync::Once = std::sync::Once::new();
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(|| ThisThread)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other test sets a global subscriber");
        });
        let written = Arc::new(Mutex::new(Vec::new()));
        CAPTURING.with(|capturing| *capturing.borrow_mut() = Some(written.clone()));
        Self { written }
    }

    /// The one line that contains `what`; fails the test, showing every line, if there
    /// is not exactly one.
    pub(crate) fn line(&self, what: &str) -> String {
        let text = String::from_utf8_lossy(&self.written.lock()).into_owned();
        let found: Vec<&str> = text.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(found.len(), 1, "one line with {what:?} in:\n{text}");
        found[0].to_string()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        CAPTURING.with(|capturing| *capturing.borrow_mut() = None);
    }
}

/// The session's end of an in-memory stream, counting the reads that got bytes.
struct CountedReads {
    inner: tokio::io::DuplexStream,
    reads: Arc<AtomicUsize>,
}

impl AsyncRead for CountedReads {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for CountedReads {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Transport for CountedReads {}
