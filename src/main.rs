//! The `mxfarm` command: parse the command line, load, start, wait, shut down.
//! Everything else lives in the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;

use clap::{Parser, Subcommand, ValueEnum};
use cli::journal_views::{DEFAULT_GRANULARITY, TimeGranularity, report, transcript};
use cli::run::{JournalFileArgs, JournalTarget, Placement, TlsFiles, ignore_file_size_signal, run};
use cli::{finish, print_err, print_out, stdout_failed};

use mxfarm::scenario;
use mxfarm::tls::{self, FarmCa};

#[derive(Parser)]
#[command(
    name = "mxfarm",
    version,
    about = "A fake receiving-MX farm for testing how mail senders retry",
    long_about = "mxfarm plays a mail provider's MX hosts — greylisting-like deferrals, \
                  full mailboxes, refusals, tarpits, hangs, dropped connections — as a TOML \
                  scenario describes them, and journals every attempt.",
    after_help = "Examples:
  mxfarm run                              run the embedded default scenario (aol)
  mxfarm run scenarios/aol.toml --journal journal.jsonl
  mxfarm run aol --bind mx1=0.0.0.0:25    same scenario, mx1 on port 25 (in a container)
  mxfarm run aol --dns 127.0.0.53:53      also answer DNS for aol.test, its hosts and PTRs
  mxfarm run --api                        also the HTTP API and live timeline on 127.0.0.1:8025
  mxfarm ctl advance 5m                   move a running farm's clock (greylisting passes)
  mxfarm dns aol                          the DNS zone the scenario produces
  mxfarm check my-scenario.toml           report every problem in a scenario
  mxfarm scenarios                        list the embedded scenarios
  mxfarm reference                        every key of the scenario format
  mxfarm transcript journal.jsonl         one retry story per delivery
  mxfarm transcript journal.jsonl --check expected.txt   golden-file test for CI
  mxfarm report journal.jsonl             findings on the sender's retry behaviour
  mxfarm run --ca-out ca.pem              STARTTLS hosts; ca.pem is the CA to trust
  mxfarm ca ./farm-ca                     a CA to install once, then: mxfarm run --ca ./farm-ca"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

// Parsed once per process: the size of `run`'s many flags costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Commands {
    /// Start the farm and serve until Ctrl-C or SIGTERM.
    #[command(after_help = "Examples:
  mxfarm run
  mxfarm run aol --journal /tmp/journal.jsonl
  mxfarm run ./my.toml --bind mx1=127.0.0.1:2600 --bind mx2=127.0.0.1:2601
  RUST_LOG=debug mxfarm run --log-format json
  mxfarm run --ca-out /tmp/mxfarm-ca.pem
  mxfarm run --ca ./farm-ca
  mxfarm run --shutdown-grace 1s
  mxfarm run --api                         API and timeline on http://127.0.0.1:8025/
  mxfarm run --api 0.0.0.0:8025 --api-token s3cret   in a container
  mxfarm run aol --hosts-from 172.28.25.11 --add-addresses --dns 172.28.25.53:53
                                           each MX host at its own address, port 25 (compose)")]
    Run {
        /// A scenario file, or the name of an embedded scenario (see `mxfarm scenarios`).
        #[arg(default_value = scenario::DEFAULT_SCENARIO)]
        scenario: String,
        /// Listen on ADDR instead of the scenario's address for HOST (repeatable).
        #[arg(long, value_name = "HOST=ADDR", value_parser = cli::run::parse_bind)]
        bind: Vec<(String, SocketAddr)>,
        /// Give every host that --bind does not place an address of its own, counting up
        /// from IP in the scenario's order, all on PORT (25 when not given), as real MX
        /// hosts are: e.g. 172.28.25.11 puts mx1, mx2, mx3 on .11, .12, .13 port 25. The
        /// farm's DNS answers with these addresses.
        #[arg(long, value_name = "IP[:PORT]", value_parser = cli::addresses::parse_hosts_from)]
        hosts_from: Option<SocketAddr>,
        /// Add each host, DNS and API address that no interface has yet to the interface
        /// that routes to it (Linux, iproute2's `ip`, and CAP_NET_ADMIN: root, or
        /// `cap_add: [NET_ADMIN]` in docker-compose); root removes them at the end. How
        /// one container holds every MX host's address.
        #[arg(long)]
        add_addresses: bool,
        /// Serve the scenario's zones (MX, A/AAAA, PTR, TXT records and DNS faults) on ADDR,
        /// UDP and TCP, e.g. 127.0.0.53:53 or 0.0.0.0:53 in a container, so a sender finds
        /// the MX hosts by itself. `mxfarm dns SCENARIO` shows what it answers.
        #[arg(long, value_name = "ADDR")]
        dns: Option<SocketAddr>,
        /// Write every journal event to FILE as JSON lines, as it happens (FILE is replaced
        /// if it is a journal; never the scenario, a certificate or key, or the CA).
        /// A message's 250 waits until its line is written to FILE.
        #[arg(long, value_name = "FILE")]
        journal: Option<PathBuf>,
        #[command(flatten)]
        journal_file: JournalFileArgs,
        /// How log lines are written (filter them with RUST_LOG, e.g. RUST_LOG=debug).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Sign the hosts' certificates with the CA in DIR (written by `mxfarm ca DIR`)
        /// instead of a new one, so senders that trust it once keep trusting the farm.
        #[arg(long, value_name = "DIR")]
        ca: Option<PathBuf>,
        /// Write the CA certificate of this run to FILE (PEM), for a sender's trust store.
        #[arg(long, value_name = "FILE")]
        ca_out: Option<PathBuf>,
        /// At Ctrl-C or SIGTERM, how long a session that cannot be told 421 (its client
        /// does not read, or is mid-TLS-handshake) has to end before the farm ends it.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = cli::run::parse_grace)]
        shutdown_grace: std::time::Duration,
        /// Serve the control API and the live timeline on ADDR (127.0.0.1:8025 when given
        /// without a value): the journal, deliveries, transcript, report, messages,
        /// greylists, clock and resets over HTTP, and a web page at /. Off unless asked.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8025")]
        api: Option<SocketAddr>,
        /// The token that requests which change something must carry (header
        /// X-Mxfarm-Token or Authorization: Bearer); required when --api is not loopback.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "MXFARM_API_TOKEN",
            hide_env_values = true
        )]
        api_token: Option<String>,
        /// A name the API may be reached by besides addresses, names without a dot and
        /// .localhost/.test/.internal/.local names (repeatable; against DNS rebinding).
        #[arg(long, value_name = "NAME")]
        api_allow_host: Vec<String>,
        /// Runtime threads for the sessions, the DNS and the API. One by default: it
        /// costs the least CPU per message (threads that share a light load wake each
        /// other for every few events); give more for a load beyond one core.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1,
            env = "MXFARM_THREADS",
            value_parser = clap::value_parser!(u16).range(1..=1024)
        )]
        threads: u16,
    },
    /// Write a CA certificate and key into DIR (ca.pem, ca-key.pem) for `run --ca DIR`.
    #[command(after_help = "Examples:
  mxfarm ca ./farm-ca
  cp ./farm-ca/ca.pem /usr/local/share/ca-certificates/mxfarm.crt && update-ca-certificates
  mxfarm run --ca ./farm-ca
  mxfarm ca ./farm-ca --force --scenario my.toml   a new CA that also signs for my.toml's names

The CA signs only for .test, .localhost, .example, .invalid, loopback and private
addresses, and each --scenario's names (critical X.509 name constraints): trusting it
cannot be abused for a real name. Its key is written 0600. It is valid for a year.")]
    Ca {
        /// Where to write ca.pem and ca-key.pem (created, for you alone, if missing).
        dir: PathBuf,
        /// Replace a CA that DIR holds already (senders that trust it then stop trusting
        /// the farm until they trust the new ca.pem).
        #[arg(long)]
        force: bool,
        /// Let the CA sign also for the domains and hostnames of this scenario (a file or
        /// an embedded scenario's name; repeatable).
        #[arg(long, value_name = "SCENARIO")]
        scenario: Vec<String>,
    },
    /// Check scenario files (or embedded scenarios by name) and report every problem with
    /// its line and column.
    #[command(after_help = "Examples:
  mxfarm check scenarios/*.toml

Exits with 0 when every file is valid, 1 otherwise.")]
    Check {
        /// Scenario files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the DNS zone a scenario produces, as zone-file text: every record the farm's
    /// DNS (`run --dns`) answers with, hosts at their scenario addresses.
    #[command(after_help = "Examples:
  mxfarm dns aol
  mxfarm dns my-scenario.toml | grep MX")]
    Dns {
        /// A scenario file, or the name of an embedded scenario.
        #[arg(default_value = scenario::DEFAULT_SCENARIO)]
        scenario: String,
    },
    /// List the scenarios embedded in this binary.
    Scenarios,
    /// Control a running farm through its API (`mxfarm run --api`): advance its clock,
    /// reset it, check its transcript, get its report, follow its events.
    Ctl(cli::ctl::CtlArgs),
    /// Run a model of a sending MTA (Postfix, Exim, Exchange, sendmail, or your own
    /// schedule) against a scenario in virtual time: when is each message delivered, when
    /// do users get a delay notice, when does it bounce.
    #[command(after_help = cli::simulate::EXAMPLES)]
    Simulate(cli::simulate::SimulateArgs),
    /// Print the reference of the scenario format: every key, condition, action and
    /// placeholder, with defaults and examples (Markdown).
    #[command(after_help = "Examples:
  mxfarm reference | less
  mxfarm reference | grep -A3 '^### `greylist'")]
    Reference,
    /// Show a journal (from `run --journal`) as one retry story per delivery.
    #[command(after_help = "Examples:
  mxfarm transcript journal.jsonl
  mxfarm transcript journal.jsonl --granularity minutes > expected.txt
  mxfarm transcript journal.jsonl --granularity minutes --check expected.txt

With --check, exits with 1 and a diff when the transcript differs from EXPECTED:
a golden-file test of a sender's retry behaviour, from any language's CI.
A journal that holds no events has an empty transcript, and a note on stderr says so.")]
    Transcript {
        /// A journal written by `mxfarm run --journal FILE`; after a rotation, the older
        /// file first (FILE.1 FILE).
        #[arg(required = true, value_name = "JOURNAL")]
        journal: Vec<PathBuf>,
        /// How precisely times are shown; coarser is stabler against a real-time sender.
        #[arg(long, value_enum, default_value_t = DEFAULT_GRANULARITY)]
        granularity: TimeGranularity,
        /// Print the same data as JSON.
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// Compare with this file instead of printing; exit 1 with a diff if they differ.
        #[arg(long, value_name = "EXPECTED")]
        check: Option<PathBuf>,
    },
    /// Check a sender's retry behaviour in a journal: early retries, MX fallback, retries
    /// after 5xx, hammering, backoff, duplicates, giving up.
    #[command(after_help = "Examples:
  mxfarm report journal.jsonl
  mxfarm report journal.jsonl --json | jq '.overall'

Exits with 0 when no finding is a problem, 2 when some are, and 1 for errors, among them
a journal that holds no events or no connection (no sender reached the farm).")]
    Report {
        /// A journal written by `mxfarm run --journal FILE`; after a rotation, the older
        /// file first (FILE.1 FILE).
        #[arg(required = true, value_name = "JOURNAL")]
        journal: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Commands::Simulate(args) = cli.command {
        // Its own runtime: one thread, paused time.
        cli::privileges::give_up_net_admin();
        return cli::simulate::simulate(args);
    }
    // Before the runtime's threads exist: each takes its capabilities from the main thread.
    cli::privileges::use_low_ports();
    let adds_addresses = matches!(
        cli.command,
        Commands::Run {
            add_addresses: true,
            ..
        }
    );
    if !adds_addresses {
        cli::privileges::give_up_net_admin();
    }
    let threads = match cli.command {
        Commands::Run { threads, .. } => usize::from(threads),
        // Reading a file, or asking a running farm over HTTP: one is plenty.
        _ => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_start(cli::privileges::give_up_net_admin)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run_command(cli)),
        Err(error) => {
            print_err(&format!("error: cannot start the runtime: {error}"));
            ExitCode::FAILURE
        }
    }
}

async fn run_command(cli: Cli) -> ExitCode {
    match cli.command {
        Commands::Run {
            scenario,
            bind,
            hosts_from,
            add_addresses,
            dns,
            journal,
            journal_file,
            log_format,
            ca,
            ca_out,
            shutdown_grace,
            api,
            api_token,
            api_allow_host,
            threads: _,
        } => {
            init_logging(log_format);
            ignore_file_size_signal();
            let tls = TlsFiles { ca, ca_out };
            let journal = journal.map(|path| JournalTarget {
                options: journal_file.options(path),
                overwrite: journal_file.journal_overwrite,
            });
            match run(
                &scenario,
                Placement {
                    bind,
                    hosts_from,
                    add_addresses,
                    dns,
                    api,
                    api_token,
                    api_allow_host,
                },
                journal,
                tls,
                shutdown_grace,
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    print_err(&message);
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Check { files } => check(&files),
        Commands::Ca {
            dir,
            force,
            scenario,
        } => ca(&dir, force, &scenario),
        Commands::Transcript {
            journal,
            granularity,
            json,
            check,
        } => transcript(&journal, granularity, json, check.as_deref()),
        Commands::Report { journal, json } => report(&journal, json),
        Commands::Reference => finish(&scenario::reference(), ExitCode::SUCCESS),
        Commands::Ctl(args) => cli::ctl::ctl(args).await,
        // main() runs it before this runtime exists, on one of its own.
        Commands::Simulate(_) => ExitCode::FAILURE,
        Commands::Dns { scenario } => match scenario::load_named(&scenario) {
            Ok(loaded) => finish(&mxfarm::dns::zone_file(&loaded), ExitCode::SUCCESS),
            Err(error) => {
                print_err(&error.to_string());
                ExitCode::FAILURE
            }
        },
        Commands::Scenarios => {
            let list: String = scenario::embedded()
                .iter()
                .map(|embedded| format!("{:<12} {}\n", embedded.name, embedded.description()))
                .collect();
            finish(&list, ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` to stdout and ends the command with `code`, or with 1 if stdout could not
/// be written for another reason than a reader that has gone.
fn ca(dir: &Path, force: bool, scenarios: &[String]) -> ExitCode {
    match write_ca(dir, force, scenarios) {
        Ok(written) => finish(&written, ExitCode::SUCCESS),
        Err(message) => {
            print_err(&message);
            ExitCode::FAILURE
        }
    }
}

/// Makes a CA for the reserved names and those of `scenarios`, and writes it into `dir`;
/// says what it wrote, what the CA may sign for, and how to use it.
fn write_ca(dir: &Path, force: bool, scenarios: &[String]) -> Result<String, String> {
    let mut scope = tls::CaScope::default();
    for name in scenarios {
        scope.add_scenario(&scenario::load_named(name).map_err(|e| e.to_string())?);
    }
    let existing = [tls::Existing::Keep, tls::Existing::Replace][usize::from(force)];
    FarmCa::generate_in(&scope)
        .and_then(|ca| ca.write(dir, existing))
        .map_err(|error| format!("error: {error}"))?;
    Ok(format!(
        "wrote {} and {} (readable by you alone), valid for {} days\n  it signs only for {}\n  use it with: mxfarm run --ca {}\n",
        dir.join(tls::CA_CERT_FILE).display(),
        dir.join(tls::CA_KEY_FILE).display(),
        tls::CA_VALIDITY_DAYS,
        scope.describe(),
        dir.display()
    ))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr is a closed pipe) is dropped; saying so
        // on that same stderr would panic the session that logged it.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for file in files {
        match scenario::load_named(&file.to_string_lossy()) {
            Ok(s) => {
                let rules: usize = s.hosts.iter().map(|h| h.rules.len()).sum();
                let ok = format!(
                    "ok: {}: scenario {:?}, {} host(s), {} domain(s), {} rule(s)\n",
                    file.display(),
                    s.name,
                    s.hosts.len(),
                    s.domains.len(),
                    rules
                );
                if let Err(error) = print_out(&ok) {
                    return stdout_failed(&error);
                }
            }
            Err(error) => {
                failed += 1;
                print_err(&error.to_string());
            }
        }
    }
    if failed > 0 {
        let total = files.len();
        print_err(&format!("{failed} of {total} file(s) have problems"));
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
