//! `mxfarm run`: the farm as a long-running process, with its journal file, CA files,
//! startup summary and clean stop on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mxfarm::Farm;
use mxfarm::api::{ApiOptions, ApiServer};
use mxfarm::farm::FarmOptions;
use mxfarm::journal::JournalFileOptions;
use mxfarm::scenario;
use mxfarm::tls::{self, FarmCa};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{addresses, print_err, print_out};

/// How the journal file is written: `--journal-fsync`, `--journal-max-bytes`.
#[derive(clap::Args)]
pub(crate) struct JournalFileArgs {
    /// With --journal: fsync the file before each 250, so acknowledged messages survive a
    /// power loss too (a 250 costs a disk flush; batches share one).
    #[arg(long, requires = "journal")]
    journal_fsync: bool,
    /// With --journal: when FILE would grow past SIZE (e.g. 512MiB), it becomes FILE.1
    /// (replacing an older one) and a new FILE begins; read both with `mxfarm report
    /// FILE.1 FILE`.
    #[arg(long, value_name = "SIZE", requires = "journal", value_parser = parse_size)]
    journal_max_bytes: Option<u64>,
    /// With --journal: replace FILE even if it holds something other than a journal.
    #[arg(long, requires = "journal")]
    pub(crate) journal_overwrite: bool,
}

impl JournalFileArgs {
    pub(crate) fn options(&self, path: PathBuf) -> JournalFileOptions {
        JournalFileOptions {
            path,
            fsync: self.journal_fsync,
            max_bytes: self.journal_max_bytes,
        }
    }
}

/// Parses `512MiB`, `10MB` or a number of bytes; at least 4KiB, so a file holds more than
/// its first line.
fn parse_size(text: &str) -> Result<u64, String> {
    let size = text
        .parse::<bytesize::ByteSize>()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 512MiB, 10MB or 100000"))?
        .as_u64();
    if size < 4096 {
        return Err(format!(
            "`{text}` is too small for a journal file: give at least 4KiB"
        ));
    }
    Ok(size)
}

/// A file size limit (`ulimit -f`) makes a write fail instead of killing the farm: the
/// journal then says it cannot be written and messages get 451, as on a full disk.
pub(crate) fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread
    // of ours could depend on it, has no memory effects.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Where the farm's CA comes from (`--ca`) and goes to (`--ca-out`).
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<PathBuf>,
    pub(crate) ca_out: Option<PathBuf>,
}

/// Where the journal goes, and whether a file there that is not a journal may be replaced.
pub(crate) struct JournalTarget {
    pub(crate) options: JournalFileOptions,
    pub(crate) overwrite: bool,
}

/// `--bind HOST=ADDR`.
pub(crate) fn parse_bind(value: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = value
        .split_once('=')
        .ok_or_else(|| format!("write HOST=ADDR, e.g. mx1=127.0.0.1:2525, not {value:?}"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address; write IP:PORT, e.g. 127.0.0.1:2525"))?;
    Ok((host.to_string(), addr))
}

/// `--shutdown-grace DURATION`.
pub(crate) fn parse_grace(value: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration ({e}); write e.g. 5s, 500ms or 1m"))
}

/// Where `mxfarm run` puts things besides the scenario's own addresses.
pub(crate) struct Placement {
    /// `--bind HOST=ADDR`.
    pub(crate) bind: Vec<(String, SocketAddr)>,
    /// `--hosts-from IP[:PORT]`: the hosts --bind leaves, at consecutive addresses.
    pub(crate) hosts_from: Option<SocketAddr>,
    /// `--add-addresses`: make the addresses exist on an interface first.
    pub(crate) add_addresses: bool,
    /// `--dns ADDR`.
    pub(crate) dns: Option<SocketAddr>,
    /// `--api [ADDR]`.
    pub(crate) api: Option<SocketAddr>,
    /// `--api-token TOKEN` (or `MXFARM_API_TOKEN`).
    pub(crate) api_token: Option<String>,
    /// `--api-allow-host NAME`.
    pub(crate) api_allow_host: Vec<String>,
}

/// `mxfarm run`: starts the farm, prints its summary, serves until Ctrl-C or SIGTERM.
pub(crate) async fn run(
    name_or_path: &str,
    placement: Placement,
    journal: Option<JournalTarget>,
    tls: TlsFiles,
    shutdown_grace: std::time::Duration,
) -> Result<(), String> {
    let scenario = scenario::load_named(name_or_path).map_err(|e| e.to_string())?;
    if let Some(target) = &journal {
        journal_target_is_safe(target, name_or_path, &scenario, &tls)?;
    }
    let journal = journal.map(|target| target.options);
    let stop = StopSignals::install()?;
    let mut bind = placement.bind;
    if let Some(start) = placement.hosts_from {
        let placed = addresses::hosts_from(&scenario, start, &bind)?;
        bind.extend(placed);
    }
    // Dropped (and so removed again) on every way out of this function.
    let added = match placement.add_addresses {
        true => {
            let wanted = (bind.iter().map(|(_, addr)| addr.ip()))
                .chain(placement.dns.map(|addr| addr.ip()))
                .chain(placement.api.map(|addr| addr.ip()));
            Some(addresses::AddedAddresses::add_missing(wanted)?)
        }
        false => None,
    };
    let mut options = FarmOptions::default();
    for (host, addr) in &bind {
        options = options.bind(host, *addr);
    }
    if let Some(addr) = placement.dns {
        options = options.dns(addr);
    }
    if let Some(file) = &journal {
        options = options.journal_file(file.clone());
    }
    if let Some(dir) = &tls.ca {
        let ca = FarmCa::load(dir).map_err(|e| format!("error: {e}"))?;
        options = options.ca(Arc::new(ca));
    }
    let farm = Farm::start_with(scenario, options)
        .await
        .map_err(|e| format!("error: {e}"))?;
    let api = match placement.api {
        Some(addr) => {
            let mut options = ApiOptions::new(addr);
            options.token = placement.api_token;
            options.allowed_hosts = placement.api_allow_host;
            Some(
                ApiServer::start(&farm, options)
                    .await
                    .map_err(|e| format!("error: {e}"))?,
            )
        }
        None => None,
    };
    // Every file is in place before the summary ends with "Ready.": a script waits for that
    // line, and must not find a farm that is about to fail.
    if let Some(path) = &tls.ca_out {
        std::fs::write(path, farm.ca_certificate_pem()).map_err(|e| {
            format!(
                "error: cannot write the CA certificate to {}: {e}\n  help: check that the directory exists and is writable",
                path.display()
            )
        })?;
    }
    // Only the summary goes to stdout: a reader that has gone, or a stdout that cannot be
    // written, must not stop a farm whose senders are about to connect.
    let added_line = added.as_ref().and_then(|added| added.describe());
    let summary = summary(
        &farm,
        api.as_ref(),
        journal.as_ref(),
        tls.ca_out.as_deref(),
        added_line,
    );
    for warning in unreachable_hosts(&farm) {
        print_err(&warning);
    }
    if let Err(error) = print_out(&summary) {
        tracing::warn!(%error, "cannot write the summary to stdout; the farm runs anyway");
    }
    stop.wait().await;
    print_err(&format!(
        "mxfarm: shutting down: open sessions get 421 4.3.2; those still busy in {} are ended",
        humantime::format_duration(shutdown_grace)
    ));
    farm.shutdown_within(shutdown_grace).await;
    // After the farm: a subscriber gets every event, to the last, before its stream ends.
    if let Some(api) = api {
        api.shutdown().await;
    }
    Ok(())
}

/// A host the farm's DNS gives a loopback address while the DNS itself serves beyond
/// loopback: a sender elsewhere (another container) would find the host and then connect to
/// its own loopback.
fn unreachable_hosts(farm: &Farm) -> Vec<String> {
    let Some(dns) = farm.dns_addr().filter(|addr| !addr.ip().is_loopback()) else {
        return Vec::new();
    };
    (farm.hosts().iter())
        .filter(|host| host.addr.ip().is_loopback())
        .map(|host| {
            format!(
                "warning: host {} listens on {}, a loopback address, while the DNS serves on {dns}: \
                 a sender elsewhere that looks it up cannot reach it\n  help: place it with --bind {}=IP:25 or --hosts-from IP",
                host.name, host.addr, host.name
            )
        })
        .collect()
}

/// Refuses a journal that would replace a file the farm runs from (the scenario, a host's
/// certificate or key, the CA, the --ca-out file), or an existing file that is not a
/// journal unless --journal-overwrite says so: the journal file is replaced at start.
fn journal_target_is_safe(
    target: &JournalTarget,
    name_or_path: &str,
    scenario: &scenario::Scenario,
    tls: &TlsFiles,
) -> Result<(), String> {
    use mxfarm::journal::target as journal_target;
    // An embedded scenario has no file; a file of that name in the way would be played.
    let file = Some(Path::new(name_or_path)).filter(|path| path.exists());
    let ca: Vec<PathBuf> = (tls.ca.iter())
        .flat_map(|dir| [dir.join(tls::CA_CERT_FILE), dir.join(tls::CA_KEY_FILE)])
        .collect();
    let protected = journal_target::run_files(file, scenario, &ca, tls.ca_out.as_deref());
    journal_target::check(&target.options.path, &protected, target.overwrite)
        .map_err(|e| format!("error: {e}"))
}

/// The farm's summary, with where this run writes its journal and CA.
fn summary(
    farm: &Farm,
    api: Option<&ApiServer>,
    journal: Option<&JournalFileOptions>,
    ca_out: Option<&Path>,
    added_addresses: Option<String>,
) -> String {
    let mut out = farm.summary();
    if let Some(added) = added_addresses {
        out.push_str(&format!("  addresses {added}\n"));
    }
    match api {
        Some(api) => out.push_str(&format!(
            "  api  {} (timeline at {}/, journal at {}/api/v1/events, `mxfarm ctl --api {}`)\n",
            api.addr(),
            api.url(),
            api.url(),
            api.url()
        )),
        None => out.push_str("  api  off (--api serves it and the timeline on 127.0.0.1:8025)\n"),
    }
    if let Some(file) = journal {
        out.push_str(&format!("  journal -> {}", file.path.display()));
        if file.fsync {
            out.push_str(", fsync before every 250");
        }
        if let Some(max) = file.max_bytes {
            let rotated = file.rotated_path();
            out.push_str(&format!(
                ", rotated into {} at {}",
                rotated.display(),
                bytesize::ByteSize::b(max).display().iec()
            ));
        }
        out.push('\n');
    }
    if let Some(path) = ca_out {
        out.push_str(&format!("  CA certificate -> {}\n", path.display()));
    }
    out.push_str("Ready. Ctrl-C stops the farm.\n");
    out
}

/// Ctrl-C and SIGTERM, registered before the farm says it is ready, so that a signal sent
/// right after "Ready." shuts it down cleanly instead of killing it.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> Result<Self, String> {
        let listen = |kind| {
            signal(kind).map_err(|e| format!("error: cannot listen for Ctrl-C and SIGTERM: {e}"))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
