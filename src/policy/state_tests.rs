//! Tests of the policy's bounded state: greylist, whitelist and rate-limit stores stay
//! within `max-entries`, forget in time order, and are shared only as the scenario says
//! (split from `tests.rs`, whose helpers they use).

use std::time::Duration;

use super::tests::*;
use super::*;

/// The greylist store of rule `i` of `p`.
fn greylist_store(p: &HostPolicy, i: usize) -> &GreylistStore {
    match &p.stores[i] {
        RuleStore::Greylist(store) => store,
        other => panic!("rule {i} keeps {other:?}"),
    }
}

fn rate_store(p: &HostPolicy, i: usize) -> &RateStore {
    match &p.stores[i] {
        RuleStore::Rate(store) => store,
        other => panic!("rule {i} keeps {other:?}"),
    }
}

/// Offers `recipient` from `a@x.test` by `client` on a fresh connection.
fn offer(p: &HostPolicy, client: &str, recipient: &str, now: Duration) -> String {
    let mut conv = p.open(1, client.parse().unwrap());
    let facts = in_tx("a@x.test", &[]);
    line(p.decide(Rcpt { recipient }, &facts, &mut conv, now))
}

/// A flood of distinct triplets keeps the store at `max-entries`: the triplets seen
/// longest ago are forgotten first, and a sender whose triplet was forgotten is
/// greylisted again, as a new triplet, when it retries.
#[test]
fn a_flood_of_triplets_keeps_the_greylist_within_max_entries_forgetting_the_oldest() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { greylist = { max-entries = 100, reply = \"451 4.7.1 wait {remaining}s\" } }\n",
    );
    let deferred = "refuse 451 4.7.1 wait 300s by host mx1 rule 1 retry in 5m";
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(0)), deferred);
    for i in 0..1_000 {
        offer(&p, CLIENT, &format!("flood{i}@y.test"), secs(1));
        assert!(greylist_store(&p, 0).len() <= 100, "after {i} more");
    }
    assert_eq!(greylist_store(&p, 0).len(), 100);
    // After the delay, the first triplet has been forgotten: it starts over.
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(400)), deferred);
    // The most recent ones are still known, and pass.
    assert_eq!(offer(&p, CLIENT, "flood999@y.test", secs(400)), "accept");
    assert_eq!(greylist_store(&p, 0).len(), 100);
}

/// The whitelist of clients that passed is bounded the same way.
#[test]
fn a_flood_of_passing_clients_keeps_the_whitelist_within_max_entries() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { greylist = { max-entries = 50, ipv4-prefix = 32 } }\n",
    );
    for i in 0..200u32 {
        let client = format!("198.51.{}.{}", i / 256, i % 256);
        offer(&p, &client, "r@y.test", secs(0));
        assert_eq!(offer(&p, &client, "r@y.test", secs(300)), "accept");
    }
    assert_eq!(greylist_store(&p, 0).clients(), 50);
    assert_eq!(greylist_store(&p, 0).len(), 50);
}

/// Time passing (on the farm's clock) forgets expired triplets in time order, a few per
/// decision, without a sweep of the whole store: the count drops by a bounded step per
/// RCPT until only live triplets are left.
#[test]
fn expired_triplets_leave_a_few_per_decision_as_farm_time_passes() {
    use crate::clock::Clock;
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\nthen = { greylist = { delay = \"5m\", expiry = \"1d\" } }\n",
    );
    let clock = Clock::new();
    let hours = |n: u64| secs(n * 3600);
    // 200 triplets that pass; 12 hours later, 100 that never come back.
    for i in 0..200 {
        let rcpt = format!("passed{i}@y.test");
        offer(&p, CLIENT, &rcpt, clock.now());
        offer(&p, CLIENT, &rcpt, clock.now() + secs(300));
    }
    clock.advance(hours(12)).unwrap();
    for i in 0..100 {
        offer(&p, CLIENT, &format!("once{i}@y.test"), clock.now());
    }
    let store = greylist_store(&p, 0);
    assert_eq!(store.len(), 300);
    // Within the expiry nothing leaves.
    clock.advance(hours(1)).unwrap();
    offer(&p, CLIENT, "fresh0@y.test", clock.now());
    assert_eq!(store.len(), 301);
    // 12 hours later the 200 passed ones have not been seen for a day, while the 100
    // others were seen 13 hours ago: only the oldest leave, EXPIRE_PER_CALL at a time,
    // each decision adding its own triplet.
    clock.advance(hours(12)).unwrap();
    let step = bounded::EXPIRE_PER_CALL;
    offer(&p, CLIENT, "fresh1@y.test", clock.now());
    assert_eq!(store.len(), 301 - step + 1, "one bounded step, not a sweep");
    let calls = 200usize.div_ceil(step) + 5;
    for i in 2..calls {
        offer(&p, CLIENT, &format!("fresh{i}@y.test"), clock.now());
    }
    assert_eq!(
        store.len(),
        100 + calls,
        "the 200 expired ones are gone, no more"
    );
    // Two days on, everything seen so far is expired.
    clock.advance(hours(48)).unwrap();
    let late = (100 + calls).div_ceil(step) + 1;
    for i in 0..late {
        offer(&p, CLIENT, &format!("late{i}@y.test"), clock.now());
    }
    assert_eq!(store.len(), late, "only the latest triplets are left");
}

/// A flood of distinct rate-limit keys keeps the store at `max-entries`; a key
/// forgotten so counts from zero again, a recent key keeps its count.
#[test]
fn a_flood_of_rate_keys_keeps_the_limit_within_max_entries_forgetting_the_oldest() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 1, window = \"1h\", max-entries = 100, reply = \"451 4.7.1 slow\" } }\n",
    );
    let refused = "refuse 451 4.7.1 slow by host mx1 rule 1";
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(0)), "accept");
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(1)), refused);
    for i in 0..1_000 {
        offer(&p, CLIENT, &format!("flood{i}@y.test"), secs(2));
        let (held, keys) = rate_store(&p, 0).held();
        assert!(held <= 100 && keys <= 100, "after {i} more: {held} {keys}");
    }
    assert_eq!(offer(&p, CLIENT, "flood999@y.test", secs(3)), refused);
    assert_eq!(
        offer(&p, CLIENT, "first@y.test", secs(3)),
        "accept",
        "forgotten, so counted from zero"
    );
}

/// In a sliding window each remembered event time is an entry: a few busy keys use the
/// room that many quiet ones would.
#[test]
fn sliding_windows_count_each_remembered_time_against_max_entries() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 10, window = \"1h\", max-entries = 25 } }\n",
    );
    for i in 0..3 {
        for n in 0..10 {
            offer(&p, CLIENT, &format!("busy{i}@y.test"), secs(n));
        }
    }
    // 30 times do not fit in 25: the first key was forgotten, all of it.
    assert_eq!(rate_store(&p, 0).held(), (20, 2));
}

/// Idle rate keys leave in time order, a few per decision, once their window is over.
#[test]
fn idle_rate_keys_leave_a_few_per_decision_once_their_window_is_over() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 5, window = \"10m\", kind = \"fixed\" } }\n",
    );
    for i in 0..50 {
        offer(&p, CLIENT, &format!("r{i}@y.test"), secs(0));
    }
    assert_eq!(rate_store(&p, 0).held(), (50, 50));
    offer(&p, CLIENT, "late0@y.test", secs(600));
    let step = bounded::EXPIRE_PER_CALL;
    assert_eq!(rate_store(&p, 0).held().1, 50 - step + 1);
    let late = 50usize.div_ceil(step) + 1;
    for i in 1..late {
        offer(&p, CLIENT, &format!("late{i}@y.test"), secs(600));
    }
    assert_eq!(
        rate_store(&p, 0).held(),
        (late, late),
        "only the late keys are left"
    );
}

/// Hosts that share a rule's state share its store; per-host state is a store per host;
/// a host without stateful rules has none, so its sessions never wait on one.
#[test]
fn stores_are_per_rule_and_shared_only_by_the_hosts_that_share_the_state() {
    let text = "name = \"t\"\n\
        [[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"g\"]\n\
        [[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"g\"]\n\
        [[host]]\nname = \"mx3\"\nlisten = \"127.0.0.1:0\"\n\
        [[ruleset]]\nname = \"g\"\n\
        [[ruleset.rule]]\nstage = \"rcpt\"\nthen = { greylist = { state = \"shared\" } }\n\
        [[ruleset.rule]]\nstage = \"rcpt\"\nthen = { rate-limit = { limit = 5, window = \"1h\", state = \"host\" } }\n";
    let scenario = Scenario::from_toml("t.toml", text).unwrap();
    let state = PolicyState::for_scenario(&scenario);
    let hosts: Vec<HostPolicy> = scenario
        .hosts
        .iter()
        .map(|h| HostPolicy::new(h, state.clone()))
        .collect();
    let (RuleStore::Greylist(g1), RuleStore::Greylist(g2)) =
        (&hosts[0].stores[0], &hosts[1].stores[0])
    else {
        panic!("{:?}", hosts[0].stores)
    };
    assert!(Arc::ptr_eq(g1, g2), "shared state: one store");
    let (RuleStore::Rate(r1), RuleStore::Rate(r2)) = (&hosts[0].stores[1], &hosts[1].stores[1])
    else {
        panic!("{:?}", hosts[0].stores)
    };
    assert!(!Arc::ptr_eq(r1, r2), "per-host state: a store each");
    assert!(hosts[2].stores.is_empty(), "mx3 has no rule, and no store");
}
