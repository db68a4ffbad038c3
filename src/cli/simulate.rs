//! `mxfarm simulate`: a model of a sending MTA against a scenario in virtual time, on a
//! farm of its own (ephemeral ports, nothing else listening), under tokio's paused time,
//! so a five-day schedule takes as long as its sessions' work.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mxfarm::render::Granularity;
use mxfarm::scenario::{self, Scenario};
use mxfarm::sender::{ModelKind, Sender, SimMessage, SimOptions, Simulation};
use mxfarm::{Farm, FarmOptions};

use super::{finish, print_err};

/// `mxfarm simulate --help`'s examples.
pub(crate) const EXAMPLES: &str = "Examples:
  mxfarm simulate aol --sender postfix --to alice@aol.test,full-bob@aol.test --messages 100
  mxfarm simulate aol --sender exchange-2010 --set DelayNotificationTimeout=00:30:00 --to bob@aol.test
  mxfarm simulate aol --sender exchange-2016 --to full-bob@aol.test \\
      --compare 'MessageRetryInterval=1m' 'MessageRetryInterval=15m'
  mxfarm simulate greylist --sender exim --to bob@greylist.test --compare exim postfix
  mxfarm simulate aol --sender ./my-queue.toml --to alice@aol.test --show summary
  mxfarm simulate aol --sender exim --parameters     every parameter, its default and source
  mxfarm simulate aol --to bob@aol.test --json | jq '.sender.summary'

Time is virtual: days of retries take a moment. The farm is a fresh one on ephemeral
ports; the sender reaches it over in-memory connections, and the farm's transcript and
report tell the same story they would of a real sender.";

/// The arguments of `mxfarm simulate`.
#[derive(clap::Args)]
pub(crate) struct SimulateArgs {
    /// A scenario file, or the name of an embedded scenario (see `mxfarm scenarios`).
    #[arg(default_value = scenario::DEFAULT_SCENARIO)]
    scenario: String,
    /// The sending MTA: postfix, exim, exchange-2010, exchange-2016, sendmail, custom, or
    /// a schedule file (FILE.toml) with the custom model's keys.
    #[arg(long, value_name = "MODEL", default_value = "postfix")]
    sender: String,
    /// Change a parameter of the model, by its MTA's name (repeatable):
    /// --set MessageRetryInterval=15m, --set maximal_backoff_time=1h.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Recipients of each message, comma-separated (every message goes to all of them).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    to: Vec<String>,
    /// The envelope sender of the messages from --to.
    #[arg(long, value_name = "ADDR", default_value = "me@sender.test")]
    from: String,
    /// How many messages to send to the --to recipients.
    #[arg(long, value_name = "N", default_value_t = 1)]
    messages: usize,
    /// The time between two messages' arrivals (the first arrives at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    interval: Duration,
    /// Messages from FILE instead of --to: a line `FROM TO[,TO...] [+OFFSET]` each
    /// (`<>` as FROM for a bounce; # starts a comment).
    #[arg(long, value_name = "FILE", conflicts_with = "to")]
    messages_file: Option<PathBuf>,
    /// Seeds the model's randomness (the order of equal-preference MX hosts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The sender's IP address as the farm sees it.
    #[arg(long, value_name = "IP", default_value = "203.0.113.25")]
    client: IpAddr,
    /// Stop after this much virtual time, with what is left reported as still queued.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    limit: Duration,
    /// Run once per VARIANT and compare them: a variant is assignments (NAME=VALUE,
    /// separated by spaces) on top of --sender and --set, or another model first
    /// ('exim queue_run_interval=15m').
    #[arg(long, value_name = "VARIANT", num_args = 1.., conflicts_with = "json")]
    compare: Vec<String>,
    /// What to print: all (the sender's side, the farm's transcript, its report), sender,
    /// summary, transcript, report.
    #[arg(long, value_enum, default_value_t = Show::All)]
    show: Show,
    /// Print JSON: {"sender": ..., "transcript": ..., "report": ...}.
    #[arg(long)]
    json: bool,
    /// List the model's parameters, defaults and sources, and exit.
    #[arg(long)]
    parameters: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Show {
    All,
    Sender,
    Summary,
    Transcript,
    Report,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    mxfarm::sender::params::parse_duration(text)
}

/// Runs the command on a current-thread runtime with paused time.
pub(crate) fn simulate(args: SimulateArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build();
    match runtime {
        Ok(runtime) => match runtime.block_on(run(args)) {
            Ok(text) => finish(&text, ExitCode::SUCCESS),
            Err(message) => {
                print_err(&message);
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            print_err(&format!("error: cannot start the runtime: {error}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: SimulateArgs) -> Result<String, String> {
    let mut scenario = scenario::load_named(&args.scenario).map_err(|e| e.to_string())?;
    // A simulation's journal holds every attempt, for the transcript and report.
    scenario.journal.max_events = scenario.journal.max_events.max(2_000_000);
    let sender = sender_of(&args.sender, &args.set)?;
    if args.parameters {
        return Ok(parameters(&sender));
    }
    let messages = messages(&args, &scenario)?;
    let options = SimOptions {
        seed: args.seed,
        client: args.client,
        limit: args.limit,
    };
    if !args.compare.is_empty() {
        return compare(&args, &scenario, &sender, &messages, &options).await;
    }
    let (simulation, farm) = one(&scenario, &sender, &messages, &options).await?;
    let text = if args.json {
        json(&simulation, &farm)
    } else {
        text(args.show, &simulation, &farm)
    };
    farm.shutdown().await;
    Ok(text)
}

/// The model `name` (or schedule file) with `sets` applied.
fn sender_of(name: &str, sets: &[String]) -> Result<Sender, String> {
    let mut sender = if name.ends_with(".toml") {
        let text = std::fs::read_to_string(name)
            .map_err(|e| format!("error: cannot read the schedule {name}: {e}"))?;
        Sender::custom_from_toml(name, &text).map_err(|e| format!("error: {e}"))?
    } else {
        Sender::named(name).ok_or_else(|| {
            let known: Vec<&str> = ModelKind::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "error: there is no sender model {name:?}\n  help: use one of {}, or a schedule file ending in .toml",
                known.join(", ")
            )
        })?
    };
    for set in sets {
        sender.assign(set).map_err(|e| {
            format!(
                "error: --set {set}: {e}\n  help: `mxfarm simulate --sender {} --parameters` lists them",
                sender.kind().name()
            )
        })?;
    }
    Ok(sender)
}

fn parameters(sender: &Sender) -> String {
    let mut out = format!("parameters of {}:\n", sender.kind().name());
    for spec in sender.kind().specs() {
        let _ = writeln!(
            out,
            "  {} = {}\n      {}\n      default from: {}",
            spec.name, spec.default, spec.what, spec.source
        );
    }
    out
}

/// The messages from --to or --messages-file.
fn messages(args: &SimulateArgs, scenario: &Scenario) -> Result<Vec<SimMessage>, String> {
    if let Some(file) = &args.messages_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("error: cannot read {}: {e}", file.display()))?;
        return read_messages(&file.display().to_string(), &text);
    }
    if args.to.is_empty() {
        let example = scenario
            .domains
            .first()
            .map_or("alice@example.test".to_string(), |d| {
                format!("alice@{}", d.name)
            });
        return Err(format!(
            "error: whom should the sender write to?\n  help: give recipients, e.g. --to {example}, or a file of messages with --messages-file"
        ));
    }
    let to: Vec<&str> = args.to.iter().map(String::as_str).collect();
    let interval = args.interval;
    Ok((0..args.messages)
        .map(|i| SimMessage {
            at: interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX)),
            ..SimMessage::new(&args.from, &to)
        })
        .collect())
}

/// `FROM TO[,TO...] [+OFFSET]` per line.
fn read_messages(file: &str, text: &str) -> Result<Vec<SimMessage>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let place = format!("{file}:{}", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (from, to, at) = match fields[..] {
            [from, to] => (from, to, Duration::ZERO),
            [from, to, at] if at.starts_with('+') => {
                let at = parse_duration(&at[1..]).map_err(|e| format!("error: {place}: {e}"))?;
                (from, to, at)
            }
            _ => {
                return Err(format!(
                    "error: {place}: {line:?} is not `FROM TO[,TO...] [+OFFSET]`\n  help: e.g. me@sender.test alice@aol.test,bob@aol.test +10m"
                ));
            }
        };
        let from = from.trim_start_matches('<').trim_end_matches('>');
        let to: Vec<&str> = to.split(',').filter(|t| !t.is_empty()).collect();
        if to.iter().any(|t| !t.contains('@')) {
            return Err(format!("error: {place}: every recipient needs an @domain"));
        }
        out.push(SimMessage {
            at,
            ..SimMessage::new(from, &to)
        });
    }
    if out.is_empty() {
        return Err(format!(
            "error: {file} holds no messages\n  help: one per line: FROM TO[,TO...] [+OFFSET]"
        ));
    }
    Ok(out)
}

async fn one(
    scenario: &Scenario,
    sender: &Sender,
    messages: &[SimMessage],
    options: &SimOptions,
) -> Result<(Simulation, Farm), String> {
    // With its DNS, on loopback: the model's MX lookups and the hosts' own checks (PTR,
    // SPF) meet the scenario's DNS faults.
    let options_farm =
        FarmOptions::ephemeral().dns(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let farm = Farm::start_with(scenario.clone(), options_farm)
        .await
        .map_err(|e| format!("error: cannot start the farm: {e}"))?;
    let simulation = farm.simulate_with(sender, messages, options).await;
    Ok((simulation, farm))
}

fn text(show: Show, simulation: &Simulation, farm: &Farm) -> String {
    let granularity = Granularity::Seconds;
    let sender = || simulation.render(granularity);
    let transcript = || farm.transcript().render(granularity);
    let report = || farm.report().render();
    match show {
        Show::Sender => sender(),
        Show::Summary => format!(
            "sender {}\n{}",
            simulation.describe(),
            simulation.summary.render()
        ),
        Show::Transcript => transcript(),
        Show::Report => report(),
        Show::All => format!(
            "== the sender's side ==\n{}\n== the farm's transcript ==\n{}\n== the farm's report ==\n{}",
            sender(),
            transcript(),
            report()
        ),
    }
}

fn json(simulation: &Simulation, farm: &Farm) -> String {
    let raw = |text: String| serde_json::value::RawValue::from_string(text).ok();
    let value = serde_json::json!({
        "sender": simulation,
        "transcript": raw(farm.transcript().to_json()),
        "report": raw(farm.report().to_json()),
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

/// One run per variant, then a table.
async fn compare(
    args: &SimulateArgs,
    scenario: &Scenario,
    base: &Sender,
    messages: &[SimMessage],
    options: &SimOptions,
) -> Result<String, String> {
    let mut rows = Vec::new();
    for variant in &args.compare {
        let mut words = variant.split_whitespace().peekable();
        let mut sender = match words.peek() {
            Some(first) if !first.contains('=') => {
                let name = words.next().unwrap_or_default();
                // The base model (with --set, or its schedule file) as it is; another
                // model from its own defaults.
                if name == base.kind().name() {
                    base.clone()
                } else {
                    sender_of(name, &[])?
                }
            }
            _ => base.clone(),
        };
        for set in words {
            sender
                .assign(set)
                .map_err(|e| format!("error: --compare {variant:?}: {e}"))?;
        }
        let (simulation, farm) = one(scenario, &sender, messages, options).await?;
        farm.shutdown().await;
        rows.push((sender.describe(), simulation.summary));
    }
    let mut out = format!(
        "{} message(s) to {} against {}\n\n",
        messages.len(),
        recipients(messages),
        scenario.name
    );
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(7);
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>7} {:>6}  {:>10} {:>10} {:>10} {:>10}  {:>8} {:>6} {:>7}",
        "variant",
        "delivered",
        "bounced",
        "queued",
        "p50",
        "p90",
        "p99",
        "max",
        "attempts",
        "warned",
        "bounces"
    );
    for (label, s) in rows {
        let t = |d| mxfarm::render::span(d, Granularity::Seconds);
        let d = s.delivery_time;
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>7} {:>6}  {:>10} {:>10} {:>10} {:>10}  {:>8} {:>6} {:>7}",
            label,
            s.delivered,
            s.bounced,
            s.queued,
            t(d.p50),
            t(d.p90),
            t(d.p99),
            t(d.max),
            format!("{}-{}", s.attempts.p50, s.attempts.max),
            s.delay_warnings,
            s.bounces
        );
    }
    out.push_str("\ndelivered, bounced, queued: recipients; p50-max: delivery time of each delivered\nrecipient from its message's arrival; attempts: median-max tries per message that\nreached a host; warned: delay warnings sent\n");
    Ok(out)
}

fn recipients(messages: &[SimMessage]) -> String {
    let mut all: Vec<&str> = messages
        .iter()
        .flat_map(|m| m.to.iter().map(String::as_str))
        .collect();
    all.sort_unstable();
    all.dedup();
    if all.len() > 3 {
        format!("{}, ... ({} recipients)", all[..3].join(", "), all.len())
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_files_are_read_line_by_line_and_mistakes_placed() {
        let m = read_messages(
            "m.txt",
            "# a comment\nme@s.test a@x.test,b@x.test\n<> c@x.test +10m # a bounce\n",
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].to, ["a@x.test", "b@x.test"]);
        assert_eq!(m[1].from, "");
        assert_eq!(m[1].at, Duration::from_secs(600));
        let bad = read_messages("m.txt", "\nme@s.test\n").unwrap_err();
        assert!(bad.contains("m.txt:2") && bad.contains("FROM TO"), "{bad}");
        assert!(
            read_messages("m.txt", "me@s.test nobody\n")
                .unwrap_err()
                .contains("@domain")
        );
        assert!(read_messages("m.txt", "# nothing\n").is_err());
    }
}
