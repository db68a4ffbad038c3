//! The SMTP engine: accept loops, sessions, and the replies a host sends on its own.

pub mod host;
pub mod reply;
pub mod serve;
pub mod session;

pub use host::HostRuntime;
pub use session::Session;

/// A stream a session can run over: TCP, an in-memory pipe, later TLS.
pub trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    /// Ends the connection with a TCP reset where the stream has one, so that the client
    /// sees the host as down; a plain close elsewhere.
    fn reset(&mut self) {}
}

impl Transport for tokio::net::TcpStream {
    fn reset(&mut self) {
        // SO_LINGER 0: the close that follows sends RST instead of FIN.
        let _ = self.set_zero_linger();
    }
}

impl Transport for tokio::io::DuplexStream {}
