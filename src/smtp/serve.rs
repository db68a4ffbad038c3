//! The accept loop of one host: a task per connection, a slot per connection, and no
//! error of one connection ever stops the listener.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::host::{ActiveGuard, HostRuntime};
use super::session::Session;
use crate::farm::FarmState;

/// Accepts connections until the farm shuts down.
pub async fn serve(
    listener: TcpListener,
    host: Arc<HostRuntime>,
    farm: Arc<FarmState>,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = farm.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(host = %host.name, %error, "accept failed");
                farm.clock.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = farm.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ActiveGuard::try_acquire(&host);
        let session = Session::new(stream, host.clone(), farm.clone(), conn, client, slot);
        sessions.spawn(session.run());
    }
}
