//! The SMTP engine: accept loops, sessions, and the replies a host sends on its own.

pub mod host;
pub mod reply;
pub mod serve;
pub mod session;

pub use host::HostRuntime;
pub use session::Session;
