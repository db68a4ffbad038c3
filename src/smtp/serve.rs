//! The accept loop of one host: a session per connection, and no error of one connection
//! ever stops the listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::env::{Env, Shutdown, start_session};
use super::host::HostRuntime;

/// Accepts connections until the shutdown begins.
pub(crate) async fn serve(
    listener: TcpListener,
    host: Arc<HostRuntime>,
    env: Env,
    shutdown: Shutdown,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.begun() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(host = %host.name, %error, "accept failed");
                env.clock.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        start_session(&env, &host, stream, client, &shutdown, &sessions);
    }
}
