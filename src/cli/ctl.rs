//! `mxfarm ctl`: a running farm's control API from the shell, for CIs that test a sender
//! written in any language: move the clock, reset, check the transcript against a golden
//! file, get the report, follow the events, replace the scenario. It speaks plain HTTP to
//! `mxfarm run --api`; every change carries the token header.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{finish, golden, print_err, print_out, stdout_failed};

/// The header that carries the token.
const TOKEN_HEADER: &str = "x-mxfarm-token";

#[derive(Args)]
#[command(after_help = "Examples:
  mxfarm ctl advance 5m                        greylisted retries pass without waiting
  mxfarm ctl reset                             forget policy state, journal and messages
  mxfarm ctl reset --journal                   start the transcript afresh, keep the greylist
  mxfarm ctl transcript --granularity minutes > expected.txt
  mxfarm ctl transcript --granularity minutes --check expected.txt
  mxfarm ctl report                            exits 2 when a finding is a problem
  mxfarm ctl events --follow | jq -c 'select(.event == \"reply\")'
  mxfarm ctl scenario my.toml --reset-state    play another scenario, state forgotten
  mxfarm ctl ready                             exit 0 once the farm takes connections
  MXFARM_API=http://mxfarm:8025 MXFARM_API_TOKEN=s3cret mxfarm ctl advance 1h")]
pub(crate) struct CtlArgs {
    /// The farm's API, as `mxfarm run --api` prints it.
    #[arg(
        long,
        value_name = "URL",
        env = "MXFARM_API",
        default_value = "http://127.0.0.1:8025"
    )]
    api: String,
    /// The farm's token (`run --api-token`), sent with every change.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MXFARM_API_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Move the farm's clock forward (journalled, so the transcript shows the jump).
    Advance {
        /// How far: "30s", "5m", "1h30m", "2d".
        #[arg(value_name = "DURATION")]
        by: String,
    },
    /// Forget what the farm learnt; without flags, everything.
    Reset {
        /// Greylist triplets and whitelists, rate and attempt counts.
        #[arg(long)]
        policy: bool,
        /// The journal: transcripts and reports start again.
        #[arg(long)]
        journal: bool,
        /// The captured messages.
        #[arg(long)]
        messages: bool,
    },
    /// The running farm's retry stories; with --check, a golden-file test.
    #[command(
        after_help = "With --check, exits with 1 and a diff when the transcript differs from \
                      EXPECTED, exactly as `mxfarm transcript --check` does for a journal file."
    )]
    Transcript {
        /// How precisely times are shown: exact, seconds, minutes or none.
        #[arg(long, default_value = "seconds", value_parser = ["exact", "seconds", "minutes", "none"])]
        granularity: String,
        /// Print the same data as JSON.
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// Compare with this file instead of printing; exit 1 with a diff if they differ.
        #[arg(long, value_name = "EXPECTED")]
        check: Option<PathBuf>,
    },
    /// Findings on the sender's retry behaviour; exits 2 when some are problems.
    Report {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The journal's events as JSON lines (the journal file's format).
    Events {
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// Keep printing events as they happen, until the farm stops (or Ctrl-C).
        #[arg(long)]
        follow: bool,
    },
    /// Exit 0 if the farm is ready (its /readyz), 1 if not or unreachable: a container's
    /// HEALTHCHECK, or a script waiting for the farm.
    Ready,
    /// Play another scenario (a file, or an embedded scenario's name) from now on.
    Scenario {
        #[arg(value_name = "SCENARIO")]
        scenario: String,
        /// Forget what the rules learnt instead of keeping it.
        #[arg(long)]
        reset_state: bool,
    },
}

/// A failure to report: its message (with a hint), and the exit code.
struct Failed(String);

pub(crate) async fn ctl(args: CtlArgs) -> ExitCode {
    // Straight to the farm: a proxy from the environment (docker puts its client's proxy
    // settings into every container) would take a healthcheck's request to 127.0.0.1 or
    // a compose service's name elsewhere.
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(client) => client,
        Err(e) => {
            print_err(&format!("error: cannot make an HTTP client: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let ctl = Ctl {
        base: args.api.trim_end_matches('/').to_string(),
        token: args.token,
        client,
    };
    let done = match args.command {
        CtlCommand::Advance { by } => ctl.advance(&by).await,
        CtlCommand::Reset {
            policy,
            journal,
            messages,
        } => ctl.reset(policy, journal, messages).await,
        CtlCommand::Transcript {
            granularity,
            json,
            check,
        } => ctl.transcript(&granularity, json, check).await,
        CtlCommand::Report { json } => ctl.report(json).await,
        CtlCommand::Events { after, follow } => ctl.events(after, follow).await,
        CtlCommand::Ready => ctl.ready().await,
        CtlCommand::Scenario {
            scenario,
            reset_state,
        } => ctl.scenario(&scenario, reset_state).await,
    };
    match done {
        Ok(code) => code,
        Err(Failed(message)) => {
            print_err(&message);
            ExitCode::FAILURE
        }
    }
}

struct Ctl {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Ctl {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failed {
        Failed(format!(
            "error: cannot reach the farm's API at {}: {error}\n  help: start the farm with `mxfarm run --api` (it prints the API's address), or name it with --api URL or MXFARM_API",
            self.base
        ))
    }

    /// Sends `request`; a response that is not a success becomes the API's error and hint.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failed> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let problem: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let text = |key: &str| problem[key].as_str().unwrap_or("").to_string();
        let mut message = match text("error") {
            e if e.is_empty() => format!("error: the farm's API answered {status}: {body}"),
            e => format!("error: {e}"),
        };
        if let Some(details) = problem["details"]["text"].as_str() {
            message = format!("{details}\n{message}");
        }
        match text("help") {
            h if h.is_empty() => {}
            h => message.push_str(&format!("\n  help: {h}")),
        }
        Err(Failed(message))
    }

    /// A change: the token header (any value when the farm has no token).
    fn change(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.token.as_deref().unwrap_or("-");
        self.client
            .request(method, self.url(path))
            .header(TOKEN_HEADER, token)
    }

    /// `/readyz`: the farm's hosts, DNS and API are bound and it is not shutting down.
    async fn ready(&self) -> Result<ExitCode, Failed> {
        // A farm that accepts the connection but never answers is not ready either.
        let request =
            (self.client.get(self.url("/readyz"))).timeout(std::time::Duration::from_secs(5));
        let response = self.send(request).await?;
        let ready = self.json(response).await?;
        let hosts = ready["hosts"].as_array().map_or(0, Vec::len);
        let said = format!("ready: {hosts} hosts, api {}\n", self.base);
        Ok(finish(&said, ExitCode::SUCCESS))
    }

    async fn json(&self, response: reqwest::Response) -> Result<Value, Failed> {
        response
            .json()
            .await
            .map_err(|e| Failed(format!("error: the farm's API sent what is not JSON: {e}")))
    }

    async fn text(&self, response: reqwest::Response) -> Result<String, Failed> {
        response
            .text()
            .await
            .map_err(|e| Failed(format!("error: the farm's API broke off: {e}")))
    }

    async fn advance(&self, by: &str) -> Result<ExitCode, Failed> {
        let request = self
            .change(reqwest::Method::POST, "/api/v1/clock/advance")
            .json(&json!({ "by": by }));
        let done = self.json(self.send(request).await?).await?;
        let now = done["now"].as_str().unwrap_or("?");
        Ok(finish(
            &format!("advanced by {by}; farm time is now {now}\n"),
            ExitCode::SUCCESS,
        ))
    }

    async fn reset(&self, policy: bool, journal: bool, messages: bool) -> Result<ExitCode, Failed> {
        let mut request = self.change(reqwest::Method::POST, "/api/v1/reset");
        if policy || journal || messages {
            request = request
                .json(&json!({ "policy": policy, "journal": journal, "messages": messages }));
        }
        let done = self.json(self.send(request).await?).await?;
        let what: Vec<&str> = ["policy", "journal", "messages"]
            .into_iter()
            .filter(|part| done["reset"][part] == true)
            .collect();
        Ok(finish(
            &format!("reset: {}\n", what.join(", ")),
            ExitCode::SUCCESS,
        ))
    }

    async fn transcript(
        &self,
        granularity: &str,
        json: bool,
        check: Option<PathBuf>,
    ) -> Result<ExitCode, Failed> {
        let format = if json { "json" } else { "text" };
        let path = format!("/api/v1/transcript?granularity={granularity}&format={format}");
        let text = self
            .text(self.send(self.client.get(self.url(&path))).await?)
            .await?;
        if text.is_empty() {
            print_err(
                "note: the farm has told no delivery yet: no sender has reached it (or the journal was reset)",
            );
        }
        if json {
            return Ok(finish(&format!("{text}\n"), ExitCode::SUCCESS));
        }
        let Some(expected) = check else {
            return Ok(finish(&text, ExitCode::SUCCESS));
        };
        let mut accept = format!("mxfarm ctl --api {} transcript", self.base);
        if granularity != "seconds" {
            accept.push_str(&format!(" --granularity {granularity}"));
        }
        Ok(golden::compare(
            &text,
            &expected,
            "the running farm",
            &accept,
        ))
    }

    async fn report(&self, json: bool) -> Result<ExitCode, Failed> {
        let deliveries = self
            .send(self.client.get(self.url("/api/v1/deliveries")))
            .await?;
        let deliveries = self.json(deliveries).await?;
        let nothing = |key: &str| deliveries[key].as_array().is_none_or(Vec::is_empty);
        if nothing("list") && nothing("unattributed") {
            return Err(Failed(
                "error: there is no retry behaviour to check: no sender has reached the farm yet (or the journal was reset)\n  help: run the sender first; `mxfarm ctl events --follow` shows what arrives".to_string(),
            ));
        }
        let format = if json { "json" } else { "text" };
        let path = format!("/api/v1/report?format={format}");
        let response = self.send(self.client.get(self.url(&path))).await?;
        let problems = response
            .headers()
            .get("x-mxfarm-problems")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut text = self.text(response).await?;
        if json {
            text.push('\n');
        }
        let code = if problems == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
        Ok(finish(&text, code))
    }

    async fn events(&self, after: u64, follow: bool) -> Result<ExitCode, Failed> {
        if follow {
            return self.follow(after).await;
        }
        /// A page, its events as the farm wrote them (the journal file's field order).
        #[derive(serde::Deserialize)]
        struct Page {
            events: Vec<Box<serde_json::value::RawValue>>,
            missed: u64,
            next_after: u64,
            more: bool,
        }
        let mut after = after;
        loop {
            let path = format!("/api/v1/journal?after={after}&limit=1000");
            let response = self.send(self.client.get(self.url(&path))).await?;
            let page: Page = response.json().await.map_err(|e| {
                Failed(format!(
                    "error: the farm's API sent an unexpected page: {e}"
                ))
            })?;
            if page.missed > 0 {
                print_err(&dropped_note(page.missed));
            }
            let mut lines = String::new();
            for event in &page.events {
                lines.push_str(event.get());
                lines.push('\n');
            }
            if let Err(error) = print_out(&lines) {
                return Ok(stdout_failed(&error));
            }
            if !page.more || page.next_after == after {
                return Ok(ExitCode::SUCCESS);
            }
            after = page.next_after;
        }
    }

    /// Follows `/events`: each journal event as a JSON line, until the stream ends.
    async fn follow(&self, after: u64) -> Result<ExitCode, Failed> {
        let request = self
            .client
            .get(self.url(&format!("/api/v1/events?after={after}")))
            .header("accept", "text/event-stream");
        let mut response = self.send(request).await?;
        // Bytes until a whole frame is there: a character may be cut between chunks.
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(Failed(format!("error: the event stream broke off: {e}"))),
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = buffer.drain(..end + 2).collect();
                let frame = String::from_utf8_lossy(&bytes);
                let mut event = "message";
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = if name == "dropped" {
                            "dropped"
                        } else {
                            "message"
                        };
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if event == "dropped" {
                    let missed: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    print_err(&dropped_note(missed["dropped"].as_u64().unwrap_or(0)));
                    continue;
                }
                if let Err(error) = print_out(&format!("{data}\n")) {
                    return Ok(stdout_failed(&error));
                }
            }
        }
    }

    async fn scenario(&self, name_or_path: &str, reset_state: bool) -> Result<ExitCode, Failed> {
        // The command line's rule for files and embedded names, and its bounds; the farm
        // validates what it gets.
        let text = mxfarm::scenario::text_named(name_or_path).map_err(|e| Failed(e.to_string()))?;
        let state = if reset_state { "reset" } else { "keep" };
        let request = self
            .change(
                reqwest::Method::PUT,
                &format!("/api/v1/scenario?state={state}"),
            )
            .header("content-type", "application/toml")
            .body(text);
        let done = self.json(self.send(request).await?).await?;
        let names = |key: &str| -> String {
            let list: Vec<String> = done[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::Array(pair) => format!(
                        "{} on {}",
                        pair.first().and_then(Value::as_str).unwrap_or("?"),
                        pair.get(1).and_then(Value::as_str).unwrap_or("?")
                    ),
                    other => other.as_str().unwrap_or("?").to_string(),
                })
                .collect();
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        };
        let mut out = format!(
            "now playing {:?} (state {}): kept {}; bound {}; removed {}\n",
            done["scenario"].as_str().unwrap_or("?"),
            if reset_state { "reset" } else { "kept" },
            names("kept"),
            names("bound"),
            names("removed"),
        );
        for note in done["not_applied"].as_array().into_iter().flatten() {
            out.push_str(&format!("  not applied: {}\n", note.as_str().unwrap_or("")));
        }
        Ok(finish(&out, ExitCode::SUCCESS))
    }
}

fn dropped_note(missed: u64) -> String {
    format!(
        "warning: {missed} event{} dropped from the farm's journal before they were read (raise [journal] max-events, or follow with `mxfarm ctl events --follow` from the start)",
        if missed == 1 { " was" } else { "s were" }
    )
}
