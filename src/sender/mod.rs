//! Models of sending MTAs (Postfix, Exim, Exchange, sendmail, or a schedule of your own),
//! run against the farm in virtual time: *with these retry settings, against this
//! provider, when does each message arrive, when do my users get a delay notice, when does
//! it bounce?*
//!
//! A model resolves each recipient domain's MX hosts from the scenario, opens real SMTP
//! sessions to the farm's hosts over in-memory streams ([`Farm::connect_in_memory`]), and
//! queues, retries, fails over, warns and bounces as that MTA does. The farm journals
//! every session as it would a real sender's, so the transcript and report of a
//! simulation read like those of a real run.
//!
//! Run it under tokio's paused time, where the clock jumps to the next wait:
//!
//! ```
//! use mxfarm::{Farm, Scenario};
//! use mxfarm::sender::{Sender, SimMessage};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let farm = Farm::start_ephemeral(mxfarm::scenario::load_named("greylist")?).await?;
//! let sender = Sender::postfix().set("delay_warning_time", "4h")?;
//! let simulation = farm
//!     .simulate(&sender, &[SimMessage::new("me@sender.test", &["bob@greylist.test"])])
//!     .await;
//! let bob = &simulation.messages[0];
//! assert_eq!(bob.attempts(), 2);
//! assert_eq!(bob.delivered_after(), Some(std::time::Duration::from_secs(300)));
//! # Ok(())
//! # }
//! ```

mod cache;
mod client;
mod custom;
mod delivery;
mod engine;
mod exchange;
mod exim;
mod model;
mod outcome;
pub mod params;
mod postfix;
mod resolve;
mod sendmail;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub use client::{ServerReply, Stage, Trouble};
pub use outcome::{
    CountPercentiles, Fate, MessageOutcome, NoticeKind, Percentiles, RecipientOutcome, SentNotice,
    SessionLog, Simulation, Summary, Try,
};
pub use params::{Kind, Params, SetError, Spec};

use crate::farm::Farm;
use model::Model;

/// The MTAs there are models of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Postfix,
    Exim,
    Exchange2010,
    Exchange2016,
    Sendmail,
    /// A schedule of your own: see `--sender FILE.toml`.
    Custom,
}

impl ModelKind {
    /// Every model, with the name `--sender` takes.
    pub const ALL: &'static [(&'static str, ModelKind)] = &[
        ("postfix", ModelKind::Postfix),
        ("exim", ModelKind::Exim),
        ("exchange-2010", ModelKind::Exchange2010),
        ("exchange-2016", ModelKind::Exchange2016),
        ("sendmail", ModelKind::Sendmail),
        ("custom", ModelKind::Custom),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// Its parameters.
    pub fn specs(self) -> &'static [Spec] {
        match self {
            ModelKind::Postfix => postfix::SPECS,
            ModelKind::Exim => exim::SPECS,
            ModelKind::Exchange2010 => exchange::SPECS_2010,
            ModelKind::Exchange2016 => exchange::SPECS_2016,
            ModelKind::Sendmail => sendmail::SPECS,
            ModelKind::Custom => custom::SPECS,
        }
    }
}

/// A sending MTA's model with its settings: what [`Farm::simulate`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    kind: ModelKind,
    params: Params,
}

impl Sender {
    /// The model `kind` with its MTA's defaults.
    pub fn new(kind: ModelKind) -> Sender {
        Sender {
            kind,
            params: Params::defaults(kind.name(), kind.specs()),
        }
    }

    /// Postfix with the defaults of `postconf(5)`.
    pub fn postfix() -> Sender {
        Sender::new(ModelKind::Postfix)
    }

    /// A schedule of your own from the TOML `text` of `file` (its keys are the `custom`
    /// model's parameters); the error names the file, line and column.
    pub fn custom_from_toml(file: &str, text: &str) -> Result<Sender, String> {
        let mut sender = Sender::new(ModelKind::Custom);
        custom::load(&mut sender.params, file, text)?;
        Ok(sender)
    }

    /// The model named `name` (`postfix`, ...), as `--sender` takes it.
    pub fn named(name: &str) -> Option<Sender> {
        ModelKind::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| Sender::new(*k))
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Sets a parameter by its MTA's name: `set("MessageRetryInterval", "00:15:00")`.
    pub fn set(mut self, name: &str, value: &str) -> Result<Sender, SetError> {
        self.params.set(self.kind.specs(), name, value)?;
        Ok(self)
    }

    /// Sets from `NAME=VALUE`, as `--set` takes it.
    pub fn assign(&mut self, assignment: &str) -> Result<(), SetError> {
        self.params.assign(self.kind.specs(), assignment)
    }

    /// `postfix (maximal_backoff_time=1h)`: the model and what differs from its defaults.
    pub fn describe(&self) -> String {
        let changed = self.settings();
        if changed.is_empty() {
            self.kind.name().to_string()
        } else {
            format!("{} ({})", self.kind.name(), changed.join(", "))
        }
    }

    fn settings(&self) -> Vec<String> {
        self.params
            .changed()
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }

    fn build(&self) -> Box<dyn Model> {
        match self.kind {
            ModelKind::Postfix => Box::new(postfix::Postfix::new(&self.params)),
            ModelKind::Exim => Box::new(exim::Exim::new(&self.params)),
            ModelKind::Exchange2010 | ModelKind::Exchange2016 => {
                Box::new(exchange::Exchange::new(&self.params))
            }
            ModelKind::Sendmail => Box::new(sendmail::Sendmail::new(&self.params)),
            ModelKind::Custom => Box::new(custom::Custom::new(&self.params)),
        }
    }
}

/// A message for the sender to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// The envelope sender; empty for a bounce.
    pub from: String,
    pub to: Vec<String>,
    /// When it enters the queue, after the simulation starts.
    pub at: Duration,
}

impl SimMessage {
    pub fn new(from: &str, to: &[&str]) -> SimMessage {
        SimMessage {
            from: from.to_string(),
            to: to.iter().map(|t| t.to_string()).collect(),
            at: Duration::ZERO,
        }
    }
}

/// How a simulation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// Seeds the model's own randomness (the order of MX hosts of equal preference).
    pub seed: u64,
    /// The sender's address, as the farm sees it (greylisting and per-client rules key
    /// on it).
    pub client: IpAddr,
    /// The simulation stops this long after it started; messages still queued then are
    /// reported as queued.
    pub limit: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            client: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 25)),
            limit: Duration::from_secs(30 * 86_400),
        }
    }
}

impl Farm {
    /// Runs `sender` with `messages` against this farm, with [`SimOptions::default`];
    /// see the [module documentation](crate::sender). Under tokio's paused time it takes
    /// only the time the sessions' work takes.
    pub async fn simulate(&self, sender: &Sender, messages: &[SimMessage]) -> Simulation {
        self.simulate_with(sender, messages, &SimOptions::default())
            .await
    }

    /// [`Farm::simulate`] with options.
    pub async fn simulate_with(
        &self,
        sender: &Sender,
        messages: &[SimMessage],
        options: &SimOptions,
    ) -> Simulation {
        let outcomes = engine::run(self, sender.build(), messages, options).await;
        Simulation {
            sender: sender.kind.name().to_string(),
            settings: sender.settings(),
            summary: Summary::of(&outcomes),
            messages: outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_reads_as_its_kind() {
        for (name, kind) in ModelKind::ALL {
            let specs = kind.specs();
            let params = Params::defaults(name, specs);
            for spec in specs {
                assert!(
                    params::parse(spec.kind, spec.default).is_ok(),
                    "{name}: the default of {} ({:?}) does not read",
                    spec.name,
                    spec.default
                );
                assert!(
                    !spec.source.is_empty(),
                    "{name}: {} has no source",
                    spec.name
                );
            }
            assert_eq!(params.changed(), Vec::new());
        }
    }
}
