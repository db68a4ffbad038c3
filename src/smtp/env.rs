//! What every session of a farm shares, and the one place where sessions start.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::host::{HostRuntime, Slot};
use super::session::Session;
use super::transport::Transport;
use crate::capture::Inbox;
use crate::clock::Clock;
use crate::dns::lookup::Lookups;
use crate::journal::Journal;

/// The farm's clock, journal and inbox, its connection numbering and the budget of
/// message content in flight: all a session needs of the farm. The farm keeps handles to
/// the same journal and inbox to read them.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(super) clock: Clock,
    pub(super) journal: Arc<Journal>,
    pub(super) inbox: Arc<Inbox>,
    /// The last connection number given, farm-wide.
    connections: Arc<AtomicU64>,
    pub(super) buffered: Arc<DataBudget>,
    /// The resolver that asks the farm's DNS, for rules that test DNS (`ptr`, `fcrdns`,
    /// `helo-dns`, `spf`); `None` when no rule does.
    pub(super) lookups: Option<Arc<Lookups>>,
}

impl Env {
    /// `max_buffered_data`: the scenario's `[limits] max-buffered-data`.
    pub(crate) fn new(
        clock: Clock,
        journal: Arc<Journal>,
        inbox: Arc<Inbox>,
        max_buffered_data: u64,
    ) -> Self {
        Self {
            clock,
            journal,
            inbox,
            connections: Arc::default(),
            buffered: Arc::new(DataBudget::new(max_buffered_data)),
            lookups: None,
        }
    }

    /// Whether sessions can look up DNS facts.
    pub(crate) fn has_lookups(&self) -> bool {
        self.lookups.is_some()
    }

    /// Sessions look up DNS facts through `lookups` (the farm's own DNS server).
    pub(crate) fn with_lookups(mut self, lookups: Arc<Lookups>) -> Self {
        self.lookups = Some(lookups);
        self
    }
}

/// The bytes of message content that all sessions of a farm hold while it arrives, and
/// their bound. Each host's `max-message-size` bounds one message, but not how many
/// arrive at once: without this, many clients each sending a large message would hold
/// the farm's memory among them. A session takes its bytes as they arrive and gives them
/// back when the message is kept (the inbox has its own bound) or dropped.
#[derive(Debug)]
pub(crate) struct DataBudget {
    max: u64,
    used: AtomicU64,
}

impl DataBudget {
    fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
        }
    }

    /// The bytes all sessions hold now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` more bytes, or nothing if that would go past the bound.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one message in flight holds of the farm's [`DataBudget`]; given back when it is
/// dropped.
#[derive(Debug)]
pub(super) struct Held {
    budget: Arc<DataBudget>,
    bytes: u64,
}

impl Held {
    pub(super) fn nothing_of(budget: &Arc<DataBudget>) -> Self {
        Self {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Holds `total` bytes in all (more than before); false, holding nothing, if the
    /// farm has no room for them: then the caller drops what it buffered.
    pub(super) fn grow_to(&mut self, total: u64) -> bool {
        let more = total.saturating_sub(self.bytes);
        if self.budget.try_take(more) {
            self.bytes += more;
            true
        } else {
            self.release();
            false
        }
    }

    /// Gives back everything held.
    pub(super) fn release(&mut self) {
        self.budget.give_back(self.bytes);
        self.bytes = 0;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// How a farm's shutdown reaches its listeners and sessions, in two steps.
///
/// First [`begin`](Self::begin): listeners stop accepting, and every session that waits
/// (for a command, in a tarpit, in a hang) says `421 4.3.2` and closes. A session that
/// cannot be told (a client that does not read its replies, a TLS handshake under way)
/// gets a grace period to finish what it is doing; then [`abort`](Self::abort) ends it
/// wherever it is, and its journal says so. Without the second step one stuck client would
/// hold the farm's exit for up to its command timeout.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown {
    begun: CancellationToken,
    aborted: CancellationToken,
    /// Set before the tokens are cancelled, and read without their locks: what a kept
    /// [`Signal`] looks at when the session is polled.
    flags: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    begun: AtomicBool,
    aborted: AtomicBool,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Stop accepting; every waiting session says 421 and closes.
    pub(crate) fn begin(&self) {
        self.flags.begun.store(true, Ordering::Release);
        self.begun.cancel();
    }

    /// End every session still running, at once.
    pub(crate) fn abort(&self) {
        self.begin();
        self.flags.aborted.store(true, Ordering::Release);
        self.aborted.cancel();
    }

    /// Resolves once the shutdown has begun.
    pub(super) async fn begun(&self) {
        self.begun.cancelled().await;
    }

    /// The same, as a future that a session keeps and polls again and again: see
    /// [`Signal`].
    pub(super) fn begun_kept(&self) -> Signal {
        Signal::new(self.begun.clone(), self.flags.clone(), |flags| &flags.begun)
    }

    /// [`Shutdown::aborted`] as a future to keep.
    pub(super) fn aborted_kept(&self) -> Signal {
        Signal::new(self.aborted.clone(), self.flags.clone(), |flags| {
            &flags.aborted
        })
    }

    /// Resolves once the grace period is over.
    pub(super) async fn aborted(&self) {
        self.aborted.cancelled().await;
    }

    /// Whether the shutdown has begun.
    pub(crate) fn has_begun(&self) -> bool {
        self.flags.begun.load(Ordering::Acquire)
    }

    pub(super) fn is_aborted(&self) -> bool {
        self.flags.aborted.load(Ordering::Acquire)
    }
}

/// A step of the shutdown (begun, or aborted) as a future that a session keeps for its
/// whole life and polls every time it is woken: it resolves once the step is taken.
///
/// Why not the token's own future: polling that takes two locks (the token's and its
/// waiters'), and a session polls it at every read of its client. This one gives the
/// task's waker to the token's future once, and then only looks at a flag, which the
/// shutdown sets before it cancels the token, until another task's waker polls it.
pub(super) struct Signal {
    future: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    flags: Arc<Flags>,
    flag: fn(&Flags) -> &AtomicBool,
    /// The waker the token's future was last polled with.
    waker: Option<Waker>,
}

impl Signal {
    fn new(token: CancellationToken, flags: Arc<Flags>, flag: fn(&Flags) -> &AtomicBool) -> Self {
        Self {
            future: Box::pin(token.cancelled_owned()),
            flags,
            flag,
            waker: None,
        }
    }
}

impl Future for Signal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if (this.flag)(&this.flags).load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if this
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.future.as_mut().poll(cx);
        if polled.is_pending() {
            this.waker = Some(cx.waker().clone());
        }
        polled
    }
}

/// Starts the session of a new connection to `host` from `client` on `tasks`: numbers it
/// farm-wide and takes one of the host's connection slots and one of the client address's
/// (without both the session only says 421 and closes). TCP accepts and in-memory
/// connections both start here, so they are the same session.
pub(crate) fn start_session(
    env: &Env,
    host: &Arc<HostRuntime>,
    stream: impl Transport,
    client: SocketAddr,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
) {
    let conn = env.connections.fetch_add(1, Ordering::Relaxed) + 1;
    // A host listening on [::] sees IPv4 clients as ::ffff:a.b.c.d; conditions, PTR
    // tables, the journal and the count per client all want the plain IPv4 address.
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    let slot = Slot::take(host, client.ip());
    let session = Session::new(
        Box::new(stream),
        host.clone(),
        env.clone(),
        shutdown.clone(),
        conn,
        client,
        slot,
    );
    // Boxed: the session's future is several KiB, which spawning would otherwise copy
    // more than once.
    tasks.spawn(Box::pin(session.run()));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A kept signal stays pending however often it is polled, and wakes whichever task
    /// polls it last once its step is taken; the other step stays pending.
    #[tokio::test(start_paused = true)]
    async fn a_kept_signal_resolves_once_its_step_is_taken() {
        let shutdown = Shutdown::new();
        let mut begun = shutdown.begun_kept();
        let mut aborted = shutdown.aborted_kept();
        for _ in 0..3 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut begun).poll(cx)));
            assert!(polled.await.is_pending());
        }
        let waiter = tokio::spawn(begun);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.begin();
        // Paused time: a wake that never comes ends this at once, as a timeout.
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the task waiting for the shutdown was woken")
            .unwrap();
        assert!(shutdown.has_begun() && !shutdown.is_aborted());
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut aborted).poll(cx)));
        assert!(polled.await.is_pending());
        shutdown.abort();
        tokio::time::timeout(Duration::from_secs(5), aborted)
            .await
            .expect("aborted");
    }
}
