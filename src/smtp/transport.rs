//! The streams a session runs over: TCP, an in-memory pipe, or TLS over either.

/// A stream a session can run over (DESIGN principle 4: generic over the stream).
pub(crate) trait Transport:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
    /// Ends the connection with a TCP reset where the stream has one, so that the client
    /// sees the host as down; a plain close elsewhere.
    fn reset(&mut self) {}

    /// Whether the end of the conversation needs the stream's `shutdown` before it is
    /// dropped: TLS sends its close_notify there, an in-memory pipe its end. A TCP socket
    /// does not: closing it sends the same FIN, and the `shutdown` system call would be
    /// one more per connection.
    fn ends_with_shutdown(&self) -> bool {
        true
    }
}

impl Transport for tokio::net::TcpStream {
    fn reset(&mut self) {
        // SO_LINGER 0: the close that follows sends RST instead of FIN.
        let _ = self.set_zero_linger();
    }

    fn ends_with_shutdown(&self) -> bool {
        false
    }
}

impl Transport for tokio::io::DuplexStream {}

impl Transport for tokio_rustls::server::TlsStream<Box<dyn Transport>> {
    fn reset(&mut self) {
        self.get_mut().0.reset();
    }
}

impl Transport for Box<dyn Transport> {
    fn reset(&mut self) {
        (**self).reset();
    }

    fn ends_with_shutdown(&self) -> bool {
        (**self).ends_with_shutdown()
    }
}

/// Stands in for the stream while STARTTLS hands it to the TLS handshake: reads end and
/// writes fail, so nothing can go out in the clear by mistake.
pub(crate) struct Unplugged;

impl tokio::io::AsyncRead for Unplugged {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Unplugged {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Transport for Unplugged {}
