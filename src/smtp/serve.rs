//! The accept loop of one host: a session per connection, and no error of one connection
//! ever stops the listener.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::env::{Env, Shutdown, start_session};
use super::host::HostRuntime;

/// What one listener serves: the host as it is configured now and the farm's env. A
/// scenario replaced while the farm runs swaps both here, so the next connection gets
/// the new host, while sessions under way finish with the one they started with.
#[derive(Debug)]
pub(crate) struct Listening {
    current: RwLock<(Arc<HostRuntime>, Env)>,
    /// Cancelled when the host leaves the scenario or moves to another address.
    closed: CancellationToken,
}

impl Listening {
    pub(crate) fn new(host: Arc<HostRuntime>, env: Env) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new((host, env)),
            closed: CancellationToken::new(),
        })
    }

    /// The host and env the next connection gets.
    pub(crate) fn current(&self) -> (Arc<HostRuntime>, Env) {
        self.current.read().clone()
    }

    /// From the next connection on, serve `host` with `env`.
    pub(crate) fn replace(&self, host: Arc<HostRuntime>, env: Env) {
        *self.current.write() = (host, env);
    }

    /// Stops accepting; sessions under way go on.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }
}

/// Accepts connections until the shutdown begins or the listener is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    listening: Arc<Listening>,
    shutdown: Shutdown,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.begun() => return,
            () = listening.closed.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (host, env) = listening.current();
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(host = %host.name, %error, "accept failed");
                env.clock.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Accepted sockets have their listener's TCP_NODELAY on Linux (see `farm::start`).
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        start_session(&env, &host, stream, client, &shutdown, &sessions);
    }
}
