//! The SMTP engine: the accept loop of each host, and the session of each connection.
//!
//! A session takes what it needs as arguments — its host ([`HostRuntime`]: the scenario's
//! host, its built-in replies, its TLS acceptor and its [`HostPolicy`]), the farm's
//! shared [`Env`] (clock, journal, inbox, the budget of content in flight) and the farm's
//! [`Shutdown`] — never the farm. It reads commands, asks the host's policy for a verdict
//! on each point a rule can decide, carries the verdict out, and journals everything it
//! reads and writes.
//!
//! [`HostPolicy`]: crate::policy::HostPolicy

mod env;
mod host;
mod replies;
mod serve;
mod session;
mod transport;

pub(crate) use env::{Env, Shutdown, start_session};
pub(crate) use host::HostRuntime;
pub(crate) use serve::{Listening, serve};
