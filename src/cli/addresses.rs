//! `run --hosts-from` and `run --add-addresses`: every MX host at an address of its own on
//! port 25, as real MX hosts are (an MX record names a host, never a port), and those
//! addresses made to exist on the interface of a container that has only one.
//!
//! Adding addresses goes through iproute2's `ip` command rather than netlink code of our
//! own: it is what an operator would type and its errors are the ones they know. As a
//! non-root user (the image's), the farm lends it `CAP_NET_ADMIN` for the time it runs
//! (see `privileges`) and holds it no longer.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use mxfarm::scenario::Scenario;

use super::privileges::NetAdminLent;

/// The command that adds and removes addresses, if not the `ip` on PATH.
const IP_COMMAND_VARIABLE: &str = "MXFARM_IP_COMMAND";

/// The port `--hosts-from` gives when it names none: the one port senders connect to.
pub(crate) const MX_PORT: u16 = 25;

/// `--hosts-from IP[:PORT]`: each host that `--bind` does not place gets the next address
/// counting up from `start`, in the scenario's order, all on the same port.
pub(crate) fn hosts_from(
    scenario: &Scenario,
    start: SocketAddr,
    bound: &[(String, SocketAddr)],
) -> Result<Vec<(String, SocketAddr)>, String> {
    if start.ip().is_unspecified() {
        return Err(format!(
            "error: --hosts-from {start}: give the first address of the hosts themselves, e.g. 172.28.25.11\n  \
             help: to listen on every interface, use --bind HOST=0.0.0.0:PORT for each host"
        ));
    }
    let mut placed = Vec::new();
    let unplaced =
        (scenario.hosts.iter()).filter(|host| !bound.iter().any(|(name, _)| name == &host.name));
    for (offset, host) in unplaced.enumerate() {
        let ip = nth_after(start.ip(), offset).ok_or_else(|| {
            format!(
                "error: --hosts-from {start}: host {} would need an address past the end of the address space\n  \
                 help: start lower, e.g. at .11 of the network",
                host.name
            )
        })?;
        placed.push((host.name.clone(), SocketAddr::new(ip, start.port())));
    }
    Ok(placed)
}

/// `--hosts-from`'s value: an address, with `:PORT` or without (then port 25).
pub(crate) fn parse_hosts_from(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    value
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, MX_PORT))
        .map_err(|_| format!("{value:?} is not an address; write IP or IP:PORT, e.g. 172.28.25.11 or 127.0.0.2:25"))
}

fn nth_after(start: IpAddr, offset: usize) -> Option<IpAddr> {
    let offset = u32::try_from(offset).ok()?;
    match start {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(offset)
            .map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add(u128::from(offset))
            .map(|n| IpAddr::V6(n.into())),
    }
}

/// Addresses this run added to an interface, removed again when the farm stops if it still
/// may (root; a container's go with the container anyway).
pub(crate) struct AddedAddresses {
    ip_command: OsString,
    added: Vec<(IpAddr, String)>,
    /// False once the farm gave `CAP_NET_ADMIN` back: then they stay, with the container.
    removable: bool,
}

impl AddedAddresses {
    /// Adds each of `wanted` that no interface has yet to the interface that routes to it,
    /// as a single address (/32 or /128), so no route changes. On an error, what was added
    /// so far is removed again.
    pub(crate) fn add_missing(wanted: impl IntoIterator<Item = IpAddr>) -> Result<Self, String> {
        let command = std::env::var_os(IP_COMMAND_VARIABLE).unwrap_or_else(|| "ip".into());
        Self::add_missing_with(command, wanted)
    }

    fn add_missing_with(
        ip_command: OsString,
        wanted: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Self, String> {
        // Before `added`, so that on an error `added` removes its addresses while the
        // capability is still lent.
        let lent = NetAdminLent::lend();
        let mut added = Self {
            ip_command,
            added: Vec::new(),
            removable: true,
        };
        let wanted: BTreeSet<IpAddr> = wanted
            .into_iter()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        for ip in wanted {
            if is_local(ip) {
                continue;
            }
            let device = added.device_towards(ip)?;
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let mut args = vec![
                "address".to_string(),
                "add".into(),
                format!("{ip}/{prefix}"),
                "dev".into(),
                device.clone(),
            ];
            if ip.is_ipv6() {
                // Duplicate address detection would keep it unusable for a second or more.
                args.push("nodad".into());
            }
            added.ip(&args)?;
            added.added.push((ip, device));
        }
        added.removable = lent.can_undo();
        Ok(added)
    }

    /// What the startup summary says: `172.28.25.11, 172.28.25.12 on eth0`, and whether
    /// they are removed at the end.
    pub(crate) fn describe(&self) -> Option<String> {
        let devices: BTreeSet<&str> = self
            .added
            .iter()
            .map(|(_, device)| device.as_str())
            .collect();
        let lines: Vec<String> = devices
            .into_iter()
            .map(|device| {
                let ips: Vec<String> = (self.added.iter())
                    .filter(|(_, d)| d == device)
                    .map(|(ip, _)| ip.to_string())
                    .collect();
                format!("{} on {device}", ips.join(", "))
            })
            .collect();
        let fate = match self.removable {
            true => "removed when the farm stops",
            false => {
                "they stay until the container's network goes: the farm gave up CAP_NET_ADMIN, so it cannot remove them"
            }
        };
        (!lines.is_empty()).then(|| format!("{} added (--add-addresses; {fate})", lines.join("; ")))
    }

    /// The interface `ip route get` says traffic to `ip` leaves by.
    fn device_towards(&self, ip: IpAddr) -> Result<String, String> {
        let output = self.ip(&["-o".into(), "route".into(), "get".into(), ip.to_string()])?;
        let words: Vec<&str> = output.split_whitespace().collect();
        (words.windows(2))
            .find(|pair| pair[0] == "dev")
            .map(|pair| pair[1].to_string())
            .ok_or_else(|| {
                format!(
                    "error: --add-addresses: no interface leads to {ip} (`ip route get {ip}` says: {})\n  \
                     help: give addresses of a network this machine or container is on",
                    output.trim()
                )
            })
    }

    /// Runs the `ip` command; its output, or an error that says what to do.
    fn ip(&self, args: &[String]) -> Result<String, String> {
        let shown = format!("{} {}", self.ip_command.to_string_lossy(), args.join(" "));
        let needs_privilege = "help: adding addresses needs CAP_NET_ADMIN: in docker-compose, \
                               `cap_add: [NET_ADMIN]` on the farm's service; or add the addresses yourself \
                               and leave out --add-addresses";
        let output = Command::new(&self.ip_command).args(args).output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "error: --add-addresses: cannot run `{shown}`: {e}\n  help: install iproute2, or set {IP_COMMAND_VARIABLE} to the `ip` command"
            ),
            // An `ip` with file capabilities the container does not grant is refused at
            // exec.
            std::io::ErrorKind::PermissionDenied => {
                format!("error: --add-addresses: cannot run `{shown}`: {e}\n  {needs_privilege}")
            }
            _ => format!("error: --add-addresses: cannot run `{shown}`: {e}"),
        })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let help = if said.contains("not permitted") {
            needs_privilege.to_string()
        } else {
            "help: check the address and the interface with `ip address`".to_string()
        };
        Err(format!(
            "error: --add-addresses: `{shown}` failed: {said}\n  {help}"
        ))
    }
}

impl Drop for AddedAddresses {
    fn drop(&mut self) {
        if !self.removable {
            return;
        }
        for (ip, device) in std::mem::take(&mut self.added) {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let args = [
                "address".into(),
                "del".into(),
                format!("{ip}/{prefix}"),
                "dev".into(),
                device,
            ];
            if let Err(error) = self.ip(&args) {
                tracing::warn!(%ip, %error, "cannot remove an address --add-addresses added");
            }
        }
    }
}

/// Whether some interface has `ip` now: binding to it works.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_counts_up_over_the_hosts_bind_leaves() {
        let scenario = mxfarm::scenario::load_named("aol").unwrap();
        let bound = vec![("mx2".to_string(), "127.0.0.1:2600".parse().unwrap())];
        let placed =
            hosts_from(&scenario, parse_hosts_from("172.28.25.11").unwrap(), &bound).unwrap();
        assert_eq!(
            placed,
            vec![
                ("mx1".to_string(), "172.28.25.11:25".parse().unwrap()),
                ("mx3".to_string(), "172.28.25.12:25".parse().unwrap()),
            ]
        );
        let v6 = hosts_from(&scenario, "[fd00::ff]:2525".parse().unwrap(), &[]).unwrap();
        assert_eq!(v6[2].1, "[fd00::101]:2525".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn hosts_from_refuses_what_cannot_be_placed() {
        let scenario = mxfarm::scenario::load_named("aol").unwrap();
        let unspecified = hosts_from(&scenario, "0.0.0.0:25".parse().unwrap(), &[]).unwrap_err();
        assert!(unspecified.contains("--bind HOST=0.0.0.0"), "{unspecified}");
        let past_the_end =
            hosts_from(&scenario, "255.255.255.254:25".parse().unwrap(), &[]).unwrap_err();
        assert!(past_the_end.contains("host mx3"), "{past_the_end}");
        let bad = parse_hosts_from("mx.example.test").unwrap_err();
        assert!(bad.contains("IP or IP:PORT"), "{bad}");
    }

    #[test]
    fn addresses_already_there_need_no_ip_command() {
        // The command cannot run: any attempt to run it would fail the call.
        let wanted = ["127.0.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap()];
        let added = AddedAddresses::add_missing_with("/nonexistent/ip".into(), wanted).unwrap();
        assert!(added.describe().is_none());
        let missing = AddedAddresses::add_missing_with(
            "/nonexistent/ip".into(),
            ["192.0.2.1".parse().unwrap()],
        );
        let error = missing.err().unwrap();
        assert!(error.contains("install iproute2"), "{error}");
    }
}
