//! DNS over TCP with bounds of our own: hickory-server's TCP listener takes every
//! connection, so a client could hold thousands open and use up the farm's file
//! descriptors, which its SMTP hosts need too. Here at most [`MAX_CONNECTIONS`] are open
//! at once and [`MAX_PER_CLIENT`] from one address (one more is closed at once, as a
//! busy server does), each ends after [`IDLE`] without a query, and every query goes to
//! the same handler as over UDP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream as DnsTcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandle};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::server::Handler;

/// DNS connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// DNS connections open at once from one address.
pub(crate) const MAX_PER_CLIENT: usize = 16;
/// How long a connection may stay without a query.
const IDLE: Duration = Duration::from_secs(10);

/// Accepts until `stop`, then ends every connection.
pub(crate) async fn serve(listener: TcpListener, handler: Arc<Handler>, stop: CancellationToken) {
    let total = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_client: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        // Finished connections leave the set as new ones come.
        while connections.try_join_next().is_some() {}
        let (stream, src) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::debug!(%error, "DNS TCP accept failed");
                handler.clock.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            continue;
        };
        let Some(slot) = Slot::take(&per_client, src.ip()) else {
            continue;
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let _held = (permit, slot);
            connection(stream, src, &handler).await;
        });
    }
    connections.shutdown().await;
}

/// One connection: its queries one after another, as hickory's own listener does.
async fn connection(stream: tokio::net::TcpStream, src: SocketAddr, handler: &Handler) {
    let (mut messages, sender) = DnsTcpStream::from_stream(AsyncIoTokioAsStd(stream), src);
    loop {
        // Polling the stream also writes the answer of the query before.
        let message = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            _ => return,
        };
        let (bytes, from) = message.into_parts();
        let Ok(request) = Request::from_bytes(bytes, from, Protocol::Tcp) else {
            return;
        };
        let response = ResponseHandle::new(src, sender.clone(), Protocol::Tcp);
        handler
            .handle_request::<_, TokioTime>(&request, response)
            .await;
    }
}

/// One open connection of an address, given back when dropped.
struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Slot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Slot> {
        let mut map = counts.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            counts: counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
