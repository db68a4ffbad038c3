//! Policy state at scale: how long a RCPT takes when a greylist and a rate limit hold a
//! million entries each, on the host that has them and on a rule-less host of the same
//! farm, while another client floods the first host with new triplets, and right after a
//! jump of farm time has expired the whole greylist; and how many bytes an entry takes.
//!
//! `cargo bench --bench policy_state` (or `-- --quick`, or `CI` set, for a small run).
//! Parameters: `MXFARM_BENCH_POLICY_ENTRIES` (1,000,000; quick 20,000) is the number of
//! distinct recipients offered to fill the stores (each makes one triplet and one rate
//! key) and the stores' `max-entries`; `MXFARM_BENCH_POLICY_SAMPLES` (20,000; quick 2,000)
//! the RCPTs timed in each phase; `MXFARM_BENCH_POLICY_THREADS` (number of cores) the
//! runtime's workers. Every run is bounded: 30 s for any read or write, 900 s in all
//! (quick: 120 s).
//!
//! A RCPT is timed from its write to its whole reply over an in-memory stream to the real
//! session (`Farm::connect_in_memory`), so a time includes parsing, the policy decision,
//! journalling and the reply: the decision's own cost is at most that, and the rule-less
//! host's times show the rest. Every reply is checked, so errors cannot pass as speed.
//! Bytes per entry are the growth of the live heap (a counting allocator) while the
//! stores fill, over the number of entries, measured on farms that have only a greylist
//! or only a rate limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mxfarm::{Farm, Scenario};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

/// Counts the bytes allocated and not yet freed, for bytes per entry.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How long any single read or write may take before the bench gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// RCPTs in one transaction while filling (then RSET), and transactions per connection.
const PER_TRANSACTION: usize = 50;
const TRANSACTIONS_PER_CONNECTION: usize = 20;
/// Clients filling at once.
const FILLERS: usize = 4;

type BenchResult<T = ()> = Result<T, String>;

struct Params {
    quick: bool,
    entries: usize,
    samples: usize,
    threads: usize,
    timeout: Duration,
}

impl Params {
    fn from_env() -> BenchResult<Self> {
        let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (entries, samples) = if quick {
            (20_000, 2_000)
        } else {
            (1_000_000, 20_000)
        };
        Ok(Self {
            quick,
            entries: env_usize("MXFARM_BENCH_POLICY_ENTRIES", entries)?.max(PER_TRANSACTION),
            samples: env_usize("MXFARM_BENCH_POLICY_SAMPLES", samples)?.max(1),
            threads: env_usize("MXFARM_BENCH_POLICY_THREADS", cores)?.max(1),
            timeout: Duration::from_secs(if quick { 120 } else { 900 }),
        })
    }
}

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// `mx1` with a rate limit per recipient and a greylist, both holding up to `cap`
/// entries (or only one of them); `mx2` and `mx3` with no rules.
fn scenario(cap: usize, greylist: bool, rate: bool) -> BenchResult<Scenario> {
    let mut text = String::from(
        "name = \"policy-state\"\n[journal]\nmax-events = 16\n\
         [[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n",
    );
    if rate {
        text.push_str(&format!(
            "[[host.rule]]\nstage = \"rcpt\"\nthen = {{ rate-limit = {{ per = \"recipient\", \
             limit = 100, window = \"1d\", max-entries = {cap} }} }}\n"
        ));
    }
    if greylist {
        text.push_str(&format!(
            "[[host.rule]]\nstage = \"rcpt\"\nthen = {{ greylist = {{ max-entries = {cap}, \
             reply = \"450 4.2.0 Greylisted\" }} }}\n"
        ));
    }
    for other in ["mx2", "mx3"] {
        text.push_str(&format!(
            "[[host]]\nname = \"{other}\"\nlisten = \"127.0.0.1:0\"\n"
        ));
    }
    Scenario::from_toml("policy-state.toml", &text).map_err(|e| e.to_string())
}

async fn io<T, E: std::fmt::Display>(
    what: impl Future<Output = Result<T, E>>,
    doing: &str,
) -> BenchResult<T> {
    match tokio::time::timeout(IO_TIMEOUT, what).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{doing}: {e}")),
        Err(_) => Err(format!("{doing}: no progress in {IO_TIMEOUT:?}")),
    }
}

/// One session over an in-memory stream, reading whole replies.
struct Client {
    io: BufReader<DuplexStream>,
    line: String,
}

impl Client {
    async fn open(farm: &Farm, host: &str, client: SocketAddr) -> BenchResult<Self> {
        let stream = farm
            .connect_in_memory(host, client)
            .ok_or_else(|| format!("no host {host}"))?;
        let mut c = Client {
            io: BufReader::new(stream),
            line: String::new(),
        };
        c.expect(220, "the greeting").await?;
        c.send("EHLO client.test\r\n").await?;
        c.expect(250, "EHLO").await?;
        Ok(c)
    }

    async fn send(&mut self, text: &str) -> BenchResult {
        io(self.io.get_mut().write_all(text.as_bytes()), "writing").await
    }

    /// The code of the next whole reply.
    async fn reply(&mut self) -> BenchResult<u16> {
        loop {
            self.line.clear();
            let n = io(self.io.read_line(&mut self.line), "reading a reply").await?;
            if n == 0 {
                return Err("the farm closed the connection".into());
            }
            let code = self
                .line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not a reply: {:?}", self.line))?;
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> BenchResult {
        match self.reply().await? {
            got if got == code => Ok(()),
            _ => Err(format!(
                "{what}: expected {code}, got {:?}",
                self.line.trim_end()
            )),
        }
    }
}

/// Offers recipients `r{first}`.. `r{first + count - 1}` to `host`, each new, pipelined in
/// transactions of `PER_TRANSACTION`; each must be greylisted (450) or, on a farm without
/// a greylist, accepted (250).
async fn fill(
    farm: &Farm,
    host: &str,
    worker: usize,
    first: usize,
    count: usize,
    new: u16,
) -> BenchResult {
    let client: SocketAddr = format!("10.0.{}.1:40000", worker % 256)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut next = first;
    let end = first + count;
    while next < end {
        let mut c = Client::open(farm, host, client).await?;
        for _ in 0..TRANSACTIONS_PER_CONNECTION {
            if next >= end {
                break;
            }
            let batch = PER_TRANSACTION.min(end - next);
            let mut script = String::from("MAIL FROM:<s@sender.test>\r\n");
            for r in next..next + batch {
                script.push_str(&format!("RCPT TO:<r{r}@farm.test>\r\n"));
            }
            script.push_str("RSET\r\n");
            c.send(&script).await?;
            c.expect(250, "MAIL").await?;
            for r in next..next + batch {
                c.expect(new, &format!("RCPT r{r}")).await?;
            }
            c.expect(250, "RSET").await?;
            next += batch;
        }
        c.send("QUIT\r\n").await?;
        c.expect(221, "QUIT").await?;
    }
    Ok(())
}

/// Fills mx1 with `entries` new recipients (from `r{offset}` on) from `FILLERS` clients
/// at once, each on a task of its own.
async fn fill_all(farm: &Arc<Farm>, entries: usize, offset: usize, new: u16) -> BenchResult {
    let share = entries.div_ceil(FILLERS);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..FILLERS {
        let first = offset + w * share;
        let count = share.min((offset + entries).saturating_sub(first));
        let farm = farm.clone();
        tasks.spawn(async move { fill(&farm, "mx1", w, first, count, new).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("a filler: {e}"))??;
    }
    Ok(())
}

/// One client offering new recipients to `host` as fast as it can, from `r{offset}` on,
/// until `done` is set or it has offered `bound`; returns how many it offered.
fn flood(
    farm: &Arc<Farm>,
    host: &'static str,
    offset: usize,
    bound: usize,
    new: u16,
    done: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BenchResult<usize>> {
    let (farm, done) = (farm.clone(), done.clone());
    tokio::spawn(async move {
        let round = PER_TRANSACTION * TRANSACTIONS_PER_CONNECTION;
        let mut offered = 0;
        while !done.load(Ordering::Relaxed) && offered < bound {
            fill(&farm, host, 99, offset + offered, round, new).await?;
            offered += round;
        }
        Ok(offered)
    })
}

/// Times `host` while a flood runs, then stops the flood.
async fn timed_under_flood(
    farm: &Arc<Farm>,
    flooded: &'static str,
    new: u16,
    timed: &[(&str, usize, &str)],
    p: &Params,
    offset: usize,
) -> BenchResult<Vec<Vec<Duration>>> {
    let done = Arc::new(AtomicBool::new(false));
    let flooding = flood(farm, flooded, offset, 4 * p.entries, new, &done);
    let mut all = Vec::new();
    for (host, known, tag) in timed {
        all.push(time_rcpts(farm, host, p.samples, *known, tag).await?);
    }
    let still = !flooding.is_finished();
    done.store(true, Ordering::Relaxed);
    let offered = flooding.await.map_err(|e| format!("the flood: {e}"))??;
    println!(
        "  (one client offered {offered} new recipients to {flooded} meanwhile{})",
        if still {
            ""
        } else {
            "; it reached its bound first"
        }
    );
    Ok(all)
}

/// Times `samples` RCPTs on `host`, one at a time: every other one a recipient from the
/// fill (`known`: a hit in both stores) and the others new (which, in full stores, make
/// each store forget its oldest entry). Returns the times.
async fn time_rcpts(
    farm: &Farm,
    host: &str,
    samples: usize,
    known: usize,
    tag: &str,
) -> BenchResult<Vec<Duration>> {
    let client: SocketAddr = "10.1.0.1:40000".parse().map_err(|e| format!("{e}"))?;
    let mut c = Client::open(farm, host, client).await?;
    let mut times = Vec::with_capacity(samples);
    let mut in_transaction = 0;
    for i in 0..samples {
        if in_transaction == 0 {
            c.send("MAIL FROM:<s@sender.test>\r\n").await?;
            c.expect(250, "MAIL").await?;
        }
        // Known recipients spread over the whole fill, in an order of no pattern.
        let rcpt = if i % 2 == 0 && known > 0 {
            format!("r{}@farm.test", (i.wrapping_mul(2_654_435_761)) % known)
        } else {
            format!("{tag}{i}@farm.test")
        };
        let line = format!("RCPT TO:<{rcpt}>\r\n");
        let started = Instant::now();
        c.send(&line).await?;
        let code = c.reply().await?;
        times.push(started.elapsed());
        if !matches!(code, 250 | 450) {
            return Err(format!("RCPT {rcpt} on {host}: {:?}", c.line.trim_end()));
        }
        in_transaction += 1;
        if in_transaction == PER_TRANSACTION {
            c.send("RSET\r\n").await?;
            c.expect(250, "RSET").await?;
            in_transaction = 0;
        }
    }
    c.send("QUIT\r\n").await?;
    c.expect(221, "QUIT").await?;
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A line of the times of one phase, and its `RESULT` fields.
fn report(name: &str, what: &str, mut samples: Vec<Duration>, results: &mut Vec<String>) {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99, p999, max) = (
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
        us(percentile(&samples, 99.9)),
        us(samples.last().copied().unwrap_or_default()),
    );
    println!(
        "{what:<58} p50 {p50:>6.1} us  p99 {p99:>6.1} us  p99.9 {p999:>7.1} us  max {max:>8.1} us  (n={})",
        samples.len()
    );
    results.push(format!("{name}_p50_us={p50:.1} {name}_p99_us={p99:.1}"));
}

/// The RCPT decision alone (`mxfarm::RcptDecider`: what a session asks the policy),
/// with both stores of mx1's rules full: filled with `entries` recipients, then, past the
/// greylist's delay, `samples` decisions timed one by one, every other one a known
/// triplet (it passes both rules, unless the store forgot it) and the others new (each makes both full stores forget
/// their oldest entry). The same stores as over the sessions, without the session, the
/// in-memory stream and the runtime's wake-ups, which make most of those times.
fn decisions_alone(p: &Params) -> BenchResult<Vec<Duration>> {
    let scenario = scenario(p.entries, true, true)?;
    let client = "10.1.0.1".parse().map_err(|e| format!("{e}"))?;
    let mut decider =
        mxfarm::RcptDecider::new(&scenario, "mx1", client, "s@sender.test").ok_or("no host mx1")?;
    for i in 0..p.entries {
        let code = decider.decide(&format!("r{i}@farm.test"), Duration::ZERO);
        if code != 450 {
            return Err(format!("filling, recipient {i}: {code} instead of 450"));
        }
    }
    let now = Duration::from_secs(600);
    let mut times = Vec::with_capacity(p.samples);
    for i in 0..p.samples {
        let known = i % 2 == 0;
        let rcpt = if known {
            format!("r{}@farm.test", (i.wrapping_mul(2_654_435_761)) % p.entries)
        } else {
            format!("n{i}@farm.test")
        };
        let started = Instant::now();
        let code = decider.decide(&rcpt, now);
        times.push(started.elapsed());
        // A known triplet passes, unless new ones made the full store forget it.
        if !(code == 450 || known && code == 250) {
            return Err(format!("timed decision {i} ({rcpt}): {code}"));
        }
    }
    Ok(times)
}

/// Live heap bytes per entry after filling a farm that has only one of the two rules.
async fn bytes_per_entry(p: &Params, greylist: bool) -> BenchResult<f64> {
    let farm = start(scenario(p.entries, greylist, !greylist)?).await?;
    // One small fill first, so that what every farm allocates once is not counted.
    fill_all(&farm, 1_000, p.entries, if greylist { 450 } else { 250 }).await?;
    let before = LIVE.load(Ordering::Relaxed);
    fill_all(&farm, p.entries, 0, if greylist { 450 } else { 250 }).await?;
    let after = LIVE.load(Ordering::Relaxed);
    stop(farm).await?;
    Ok(after.saturating_sub(before) as f64 / p.entries as f64)
}

async fn start(scenario: Scenario) -> BenchResult<Arc<Farm>> {
    let farm = Farm::start_ephemeral(scenario)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(farm))
}

async fn stop(farm: Arc<Farm>) -> BenchResult {
    let farm = Arc::into_inner(farm).ok_or("the farm is still in use")?;
    farm.shutdown().await;
    Ok(())
}

async fn run(p: &Params) -> BenchResult {
    println!(
        "mxfarm policy-state bench{}: {} distinct recipients (one triplet and one rate key \
         each), max-entries {}, {} timed RCPTs per phase, {} threads",
        if p.quick { " (quick)" } else { "" },
        p.entries,
        p.entries,
        p.samples,
        p.threads
    );
    let mut results = Vec::new();

    let started = Instant::now();
    let triplet = bytes_per_entry(p, true).await?;
    let rate_key = bytes_per_entry(p, false).await?;
    println!(
        "memory: {triplet:.0} B per greylist triplet, {rate_key:.0} B per rate-limit key \
         (live heap growth over {} entries each; filled in {:.1?})",
        p.entries,
        started.elapsed()
    );
    results.push(format!(
        "bytes_per_triplet={triplet:.0} bytes_per_rate_key={rate_key:.0}"
    ));

    report(
        "decision",
        "the RCPT decision alone (mx1's two stores full)",
        decisions_alone(p)?,
        &mut results,
    );

    let farm = start(scenario(p.entries, true, true)?).await?;
    let started = Instant::now();
    fill_all(&farm, p.entries, 0, 450).await?;
    let took = started.elapsed();
    println!(
        "filled {} triplets and {} rate keys through the sessions in {took:.1?} ({:.0} RCPT/s)",
        p.entries,
        p.entries,
        p.entries as f64 / took.as_secs_f64()
    );
    // Past the greylist's delay, the known triplets pass: a hit goes through both rules.
    farm.advance(Duration::from_secs(600));
    let n = p.samples;
    report(
        "full",
        "mx1 (greylist + rate limit, full), idle farm",
        time_rcpts(&farm, "mx1", n, p.entries, "a").await?,
        &mut results,
    );
    report(
        "ruleless",
        "mx2 (no rules), idle farm",
        time_rcpts(&farm, "mx2", n, 0, "b").await?,
        &mut results,
    );
    // A control: one client floods mx3, which has no rules, while mx2 is timed; what
    // this costs mx2 is sharing the CPU, not policy state.
    let control = timed_under_flood(&farm, "mx3", 250, &[("mx2", 0, "b2")], p, 0).await?;
    for times in control {
        report(
            "ruleless_beside_plain_flood",
            "mx2 (no rules) while a client floods mx3 (no rules)",
            times,
            &mut results,
        );
    }
    // The same client floods mx1 with new triplets instead (each makes both full stores
    // forget their oldest entry) while mx1, then mx2, are timed.
    let timed = [("mx1", p.entries, "c"), ("mx2", 0, "d")];
    let mut flooded = timed_under_flood(&farm, "mx1", 450, &timed, p, 2 * p.entries).await?;
    let other = flooded.pop().unwrap_or_default();
    let busy = flooded.pop().unwrap_or_default();
    report(
        "flooded",
        "mx1 while a client floods it with new triplets",
        busy,
        &mut results,
    );
    report(
        "ruleless_beside_policy_flood",
        "mx2 (no rules) while a client floods mx1",
        other,
        &mut results,
    );
    // Three days on every greylisted triplet is past its retry window and every rate key
    // idle for a whole window: each decision now forgets a few expired ones.
    farm.advance(Duration::from_secs(3 * 86_400));
    report(
        "expiring",
        "mx1 just after 3 days of farm time expired its stores",
        time_rcpts(&farm, "mx1", n, p.entries, "e").await?,
        &mut results,
    );
    stop(farm).await?;
    println!("RESULT {}", results.join(" "));
    Ok(())
}

fn main() -> ExitCode {
    let p = match Params::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("policy-state bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("policy-state bench: a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(p.timeout, run(&p)).await {
            Ok(result) => result,
            Err(_) => Err(format!("the run took more than {:?}", p.timeout)),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policy-state bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
