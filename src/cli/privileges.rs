//! Linux capabilities, for the container image. The image grants the binary
//! `CAP_NET_BIND_SERVICE` and `CAP_NET_ADMIN` as *permitted* file capabilities without the
//! effective bit, so that a container given neither still starts it (with the effective
//! bit, exec fails outright when the bounding set lacks one). The farm then raises what it
//! uses itself: the low ports, on the main thread before the runtime's threads exist (they
//! take their capabilities from it), and `CAP_NET_ADMIN` only on the main thread, only
//! while `--add-addresses` runs `ip`. Capabilities belong to each thread: every runtime
//! thread gives `CAP_NET_ADMIN` up as it starts, and the main thread once `ip` is done
//! (or at once, when nothing is to be added).
//!
//! iproute2's `ip` keeps its capabilities only when `CAP_NET_ADMIN` is in its inheritable
//! set (it drops them otherwise, to be safe as a setuid program), so the capability is
//! lent as inheritable and ambient, not through a file capability of its own. Root keeps
//! what it has: it needs nothing lent, and removes its addresses again at the end.

#[cfg(target_os = "linux")]
use caps::{CapSet, Capability};

/// Makes a permitted `CAP_NET_BIND_SERVICE` effective, so ports 25 and 53 can be bound as
/// a non-root user where the runtime does not open low ports to everyone (docker does).
/// Call before any thread starts.
pub(crate) fn use_low_ports() {
    #[cfg(target_os = "linux")]
    if permitted(Capability::CAP_NET_BIND_SERVICE)
        && let Err(error) = caps::raise(None, CapSet::Effective, Capability::CAP_NET_BIND_SERVICE)
    {
        tracing::debug!(%error, "cannot raise CAP_NET_BIND_SERVICE");
    }
}

/// Gives `CAP_NET_ADMIN` up on the calling thread, for good (but as root). Every runtime
/// thread calls it as it starts (`on_thread_start`).
pub(crate) fn give_up_net_admin() {
    #[cfg(target_os = "linux")]
    if !is_root() {
        let _ = caps::clear(None, CapSet::Ambient);
        for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            if let Err(error) = caps::drop(None, set, Capability::CAP_NET_ADMIN) {
                tracing::warn!(%error, "cannot give CAP_NET_ADMIN up");
            }
        }
    }
}

/// While it lives, the `ip` commands this thread runs get the permitted `CAP_NET_ADMIN`;
/// when it goes, the thread gives the capability up.
pub(crate) struct NetAdminLent {
    lent: bool,
}

impl NetAdminLent {
    pub(crate) fn lend() -> Self {
        #[cfg(target_os = "linux")]
        if !is_root() && permitted(Capability::CAP_NET_ADMIN) {
            let lent = caps::raise(None, CapSet::Inheritable, Capability::CAP_NET_ADMIN)
                .and_then(|()| caps::raise(None, CapSet::Ambient, Capability::CAP_NET_ADMIN));
            if let Err(error) = &lent {
                tracing::debug!(%error, "cannot lend CAP_NET_ADMIN to ip");
            }
            return Self { lent: true };
        }
        Self { lent: false }
    }

    /// Whether the addresses can be removed again at the end: root can, a user that gave
    /// the capability up cannot (in a container, they go with the container).
    pub(crate) fn can_undo(&self) -> bool {
        !self.lent
    }
}

impl Drop for NetAdminLent {
    fn drop(&mut self) {
        give_up_net_admin();
    }
}

#[cfg(target_os = "linux")]
fn permitted(capability: Capability) -> bool {
    caps::has_cap(None, CapSet::Permitted, capability).unwrap_or(false)
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
