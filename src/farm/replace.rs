//! Replacing a running farm's scenario (`PUT /scenario`): hosts whose address did not
//! change keep their listener and take the new configuration from their next connection
//! on; new hosts and moved ones are bound first (so a replacement happens whole or not at
//! all); hosts that are gone stop accepting while their sessions finish; the DNS serves
//! the new zone; what the stateful rules learnt is kept or reset, as asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::start::{acceptor, bind_dns, bind_host, bound_host, layout};
use super::{BoundHost, Farm, FarmError, Running};
use crate::dns::DnsService;
use crate::dns::lookup::Lookups;
use crate::journal::EventKind;
use crate::policy::PolicyState;
use crate::policy::learnt::DnsNeeds;
use crate::scenario::{Host, Scenario};
use crate::smtp::{HostRuntime, Listening, serve};

/// What becomes of what the stateful rules learnt (greylist triplets, rate and attempt
/// counts) when the scenario is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateOnReplace {
    /// Kept, per rule: a rule of the same name (`mx1/rule 1`, or a rule set's) in the
    /// new scenario goes on from it.
    #[default]
    Keep,
    /// Forgotten: the new scenario starts afresh.
    Reset,
}

/// What a replacement did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    /// The new scenario's name.
    pub scenario: String,
    /// Hosts that kept their listener: the same address as before.
    pub kept: Vec<String>,
    /// Hosts listening anew (new ones, and those whose address changed), with the
    /// address they got.
    pub bound: Vec<(String, SocketAddr)>,
    /// Hosts that are gone: they take no new connection; their sessions finish.
    pub removed: Vec<String>,
    pub state: StateOnReplace,
    /// Where the farm's DNS answers, if it runs one.
    pub dns: Option<SocketAddr>,
    /// Settings of the new scenario that only a new farm takes.
    pub not_applied: Vec<String>,
    /// The sequence number of the `scenario-replaced` event.
    pub seq: u64,
}

/// One host of the new scenario, before anything is changed.
enum Plan {
    Keep {
        config: Host,
        old: BoundHost,
    },
    Bind {
        config: Host,
        requested: SocketAddr,
        listener: TcpListener,
        addr: SocketAddr,
    },
}

impl Plan {
    fn config(&self) -> &Host {
        match self {
            Plan::Keep { config, .. } | Plan::Bind { config, .. } => config,
        }
    }

    /// The address the host will be at.
    fn addr(&self) -> SocketAddr {
        match self {
            Plan::Keep { old, .. } => old.addr,
            Plan::Bind { addr, .. } => *addr,
        }
    }
}

impl Farm {
    /// Plays `scenario` from now on. Everything that can fail (binding new listeners
    /// and the DNS, the hosts' certificates) is done before anything changes: on an
    /// error the farm goes on as it was. The journal says what happened
    /// (`scenario-replaced`); sessions under way finish with the host as they started.
    ///
    /// The journal's and the capture's bounds and `[limits] max-buffered-data` are the
    /// farm's own, set when it started; [`Replaced::not_applied`] names those the new
    /// scenario would change.
    pub async fn replace_scenario(
        &self,
        scenario: Scenario,
        state: StateOnReplace,
    ) -> Result<Replaced, FarmError> {
        let _one_at_a_time = self.core.replacing.lock().await;
        if !self.is_accepting() {
            return Err(FarmError::ShuttingDown);
        }
        let old = self.running();
        let plans = self.plan(&scenario, &old)?;
        let addresses: HashMap<String, SocketAddr> = plans
            .iter()
            .map(|plan| (plan.config().name.clone(), plan.addr()))
            .collect();
        let mut acceptors = Vec::new();
        for plan in &plans {
            acceptors.push(acceptor(plan.config(), plan.addr(), &self.core.ca)?);
        }
        let tests_dns = DnsNeeds::in_scenario(&scenario);
        let new_dns = match (&old.dns, tests_dns) {
            (None, true) => Some(bind_dns(SocketAddr::from(([127, 0, 0, 1], 0))).await?),
            _ => None,
        };

        // Nothing can fail from here on.
        let keep = state == StateOnReplace::Keep;
        let address_of = |name: &str| addresses.get(name).map(SocketAddr::ip);
        let dns = match (old.dns.clone(), new_dns) {
            (Some(dns), _) => {
                dns.replace(&scenario, address_of, keep);
                Some(dns)
            }
            (None, Some(sockets)) => Some(Arc::new(DnsService::start(
                sockets,
                &scenario,
                address_of,
                self.core.clock.clone(),
                self.core.journal.clone(),
            ))),
            (None, None) => None,
        };
        let mut env = old.env.clone();
        if let Some(dns) = dns.as_ref().filter(|_| tests_dns && !env.has_lookups()) {
            let lookups = Lookups::new(dns.addr(), self.core.clock.clone());
            env = env.with_lookups(Arc::new(lookups));
        }
        let policy = if keep {
            old.policy.adopt(&scenario);
            old.policy.clone()
        } else {
            PolicyState::for_scenario(&scenario)
        };
        let mut replaced = Replaced {
            scenario: scenario.name.clone(),
            kept: Vec::new(),
            bound: Vec::new(),
            removed: Vec::new(),
            state,
            dns: dns.as_deref().map(DnsService::addr),
            not_applied: not_applied(&old.scenario, &scenario),
            seq: 0,
        };
        let mut hosts = Vec::new();
        for (plan, tls) in plans.into_iter().zip(acceptors) {
            match plan {
                Plan::Keep { config, old } => {
                    replaced.kept.push(config.name.clone());
                    let (before, _) = old.listening.current();
                    let runtime =
                        HostRuntime::succeeding(config, tls, policy.clone(), &before, keep);
                    old.listening.replace(runtime, env.clone());
                    hosts.push(bound_host(old.requested, old.addr, &old.listening));
                }
                Plan::Bind {
                    config,
                    requested,
                    listener,
                    addr,
                } => {
                    replaced.bound.push((config.name.clone(), addr));
                    let runtime = HostRuntime::new(config, tls, policy.clone());
                    let listening = Listening::new(runtime, env.clone());
                    hosts.push(bound_host(requested, addr, &listening));
                    self.core.tasks.spawn(serve(
                        listener,
                        listening,
                        self.core.shutdown.clone(),
                        self.core.tasks.clone(),
                    ));
                }
            }
        }
        for gone in old.hosts.iter() {
            let kept = hosts
                .iter()
                .any(|h| Arc::ptr_eq(&h.listening, &gone.listening));
            if !kept {
                gone.listening.close();
                if !hosts.iter().any(|h| h.name == gone.name) {
                    replaced.removed.push(gone.name.clone());
                }
            }
        }
        let (domains, hostnames) = layout(&scenario);
        replaced.seq = self.core.journal.record(EventKind::ScenarioReplaced {
            scenario: scenario.name.clone(),
            domains,
            hostnames,
            state_kept: keep,
        });
        *self.core.running.write() = Running {
            scenario: Arc::new(scenario),
            hosts: hosts.into(),
            env,
            policy,
            dns,
        };
        Ok(replaced)
    }

    /// Which hosts keep their listener and which are bound anew: first each host takes
    /// the listener of the old host of its name if it asks for the same address; then a
    /// host on a fixed address takes the listener left there, whoever had it (two
    /// listeners cannot share an address, so two hosts may swap theirs).
    fn plan(&self, scenario: &Scenario, old: &Running) -> Result<Vec<Plan>, FarmError> {
        let placement = &self.core.placement;
        let requested: Vec<SocketAddr> = scenario
            .hosts
            .iter()
            .map(|h| placement.addr_of(h))
            .collect();
        let mut kept: Vec<Option<usize>> = vec![None; scenario.hosts.len()];
        let mut claimed = vec![false; old.hosts.len()];
        for (i, config) in scenario.hosts.iter().enumerate() {
            let same = old
                .hosts
                .iter()
                .position(|h| h.name == config.name && h.requested == requested[i]);
            if let Some(j) = same.filter(|&j| !claimed[j]) {
                kept[i] = Some(j);
                claimed[j] = true;
            }
        }
        for i in 0..scenario.hosts.len() {
            if kept[i].is_some() || requested[i].port() == 0 {
                continue;
            }
            let left = (0..old.hosts.len())
                .find(|&j| !claimed[j] && old.hosts[j].requested == requested[i]);
            if let Some(j) = left {
                kept[i] = Some(j);
                claimed[j] = true;
            }
        }
        let mut plans = Vec::new();
        for (i, config) in scenario.hosts.iter().enumerate() {
            match kept[i] {
                Some(j) => plans.push(Plan::Keep {
                    config: config.clone(),
                    old: old.hosts[j].clone(),
                }),
                None => {
                    let (listener, addr) = bind_host(config, requested[i])?;
                    plans.push(Plan::Bind {
                        config: config.clone(),
                        requested: requested[i],
                        listener,
                        addr,
                    });
                }
            }
        }
        Ok(plans)
    }
}

/// The settings a running farm keeps from its start, where `new` differs.
fn not_applied(old: &Scenario, new: &Scenario) -> Vec<String> {
    let mut notes = Vec::new();
    if old.journal != new.journal {
        notes.push("[journal]: the journal keeps the bounds the farm started with".to_string());
    }
    if old.capture != new.capture {
        notes.push("[capture]: the capture keeps the bounds the farm started with".to_string());
    }
    if old.limits.max_buffered_data != new.limits.max_buffered_data {
        notes.push(
            "[limits] max-buffered-data: the farm keeps the budget it started with".to_string(),
        );
    }
    notes
}
