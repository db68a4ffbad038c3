//! Throughput benchmark of the SMTP engine: a farm in this process, driven over loopback
//! TCP by raw-socket clients that pipeline MAIL, RCPT and DATA like a fast MTA does.
//!
//! Run with `cargo bench --bench throughput` (or `scripts/bench.sh`); `-- --quick`, or `CI`
//! set, runs a small version that finishes in seconds. See BENCHMARKS.md for what the
//! numbers mean and the parameters (`MXFARM_BENCH_*` environment variables).
//!
//! Phases, one farm for all of them:
//! 1. latency: one client, one transaction at a time, on an otherwise idle farm;
//! 2. throughput: `clients` concurrent clients, `per-conn` messages per connection, until
//!    `messages` messages were sent; latency is also measured under this load;
//! 3. connections: `clients` concurrent clients doing connect, EHLO, QUIT, until
//!    `connections` connections were made.
//!
//! Every reply is checked as it arrives, and at the end the farm's captured messages and
//! journal are checked against what was sent, so errors cannot pass as speed.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mxfarm::farm::FarmOptions;
use mxfarm::journal::{ClosedBy, EventKind, JournalFileOptions};
use mxfarm::{Event, Farm, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read or write may take before the bench gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// What the headers of a bench message take, about.
const HEADERS_SIZE: usize = 320;

type BenchResult<T = ()> = Result<T, String>;

#[derive(Debug, Clone)]
struct Params {
    quick: bool,
    clients: usize,
    messages: usize,
    per_conn: usize,
    latency_messages: usize,
    connections: usize,
    farm_threads: usize,
    client_threads: usize,
    timeout: Duration,
    /// Size the capture and the journal to keep everything, instead of the farm's defaults.
    keep_all: bool,
    /// Approximate size of each message, headers included.
    message_size: usize,
    /// The host's max-connections.
    max_connections: usize,
    /// Write the journal to this file (`MXFARM_BENCH_JOURNAL_FILE`), as `--journal` does.
    journal_file: Option<PathBuf>,
    /// fsync it before every 250 (`MXFARM_BENCH_JOURNAL_FSYNC=1`).
    journal_fsync: bool,
}

impl Params {
    fn from_env() -> BenchResult<Self> {
        let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (clients, messages, per_conn, latency, connections) = if quick {
            (8, 2_000, 50, 200, 1_000)
        } else {
            (50, 100_000, 100, 2_000, 20_000)
        };
        let clients = env_usize("MXFARM_BENCH_CLIENTS", clients)?;
        let params = Self {
            quick,
            clients,
            messages: env_usize("MXFARM_BENCH_MESSAGES", messages)?,
            per_conn: env_usize("MXFARM_BENCH_PER_CONN", per_conn)?,
            latency_messages: env_usize("MXFARM_BENCH_LATENCY_MESSAGES", latency)?,
            connections: env_usize("MXFARM_BENCH_CONNECTIONS", connections)?,
            farm_threads: env_usize("MXFARM_BENCH_FARM_THREADS", cores)?,
            client_threads: env_usize("MXFARM_BENCH_CLIENT_THREADS", cores)?,
            timeout: Duration::from_secs(env_usize(
                "MXFARM_BENCH_TIMEOUT_SECS",
                if quick { 60 } else { 600 },
            )? as u64),
            keep_all: env_usize("MXFARM_BENCH_KEEP_ALL", 0)? != 0,
            message_size: env_usize("MXFARM_BENCH_MESSAGE_SIZE", 2048)?,
            max_connections: env_usize("MXFARM_BENCH_MAX_CONNECTIONS", clients * 4 + 100)?,
            journal_file: std::env::var_os("MXFARM_BENCH_JOURNAL_FILE").map(PathBuf::from),
            journal_fsync: env_usize("MXFARM_BENCH_JOURNAL_FSYNC", 0)? != 0,
        };
        // Each with the least and the most it may be: the most keeps the bench within what
        // one machine's loopback and memory allow.
        let bounds = [
            ("MXFARM_BENCH_CLIENTS", params.clients, 1, 1_000),
            ("MXFARM_BENCH_MESSAGES", params.messages, 0, 2_000_000),
            ("MXFARM_BENCH_PER_CONN", params.per_conn, 1, 1_000_000),
            (
                "MXFARM_BENCH_LATENCY_MESSAGES",
                params.latency_messages,
                0,
                100_000,
            ),
            ("MXFARM_BENCH_CONNECTIONS", params.connections, 0, 25_000),
            ("MXFARM_BENCH_FARM_THREADS", params.farm_threads, 1, 64),
            ("MXFARM_BENCH_CLIENT_THREADS", params.client_threads, 1, 64),
            (
                "MXFARM_BENCH_TIMEOUT_SECS",
                params.timeout.as_secs() as usize,
                1,
                3_600,
            ),
            (
                "MXFARM_BENCH_MESSAGE_SIZE",
                params.message_size,
                0,
                10 << 20,
            ),
            (
                "MXFARM_BENCH_MAX_CONNECTIONS",
                params.max_connections,
                1,
                100_000,
            ),
        ];
        for (name, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                return Err(format!("{name}={value} is outside {min}..={max}"));
            }
        }
        Ok(params)
    }
}

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// The bench's scenario: one host, no rules, limits that the load never reaches.
/// `-- --print-scenario` prints it, e.g. to run the `mxfarm` binary on it.
fn scenario_toml(p: &Params) -> String {
    // By default the capture and the journal keep the farm's default limits (1000 messages,
    // 100000 events), so that the bench measures the engine as it is shipped, memory
    // included; with MXFARM_BENCH_KEEP_ALL they hold the whole run.
    let limits = if p.keep_all {
        let messages = p.messages + p.latency_messages;
        format!(
            "\n[capture]\nmax-messages = {}\nmax-bytes = {}\n\n[journal]\nmax-events = {}\n",
            messages.max(1),
            (messages as u64 + 1) * (p.message_size as u64 + 1024),
            // Generous: the exact counts per message and connection are measured at the start.
            messages * 16 + max_connections(p) * 16 + 1_000,
        )
    } else {
        String::new()
    };
    format!(
        "name = \"bench\"\n\
         description = \"One host, no rules: the engine's fast path\"\n\
         {limits}\n\
         [[host]]\n\
         name = \"mx1\"\n\
         listen = \"127.0.0.1:2525\"\n\n\
         [host.limits]\n\
         max-connections = {0}\n\
         max-connections-per-client = {0}\n\
         max-message-size = {1}\n\
         max-errors = 1\n\
         command-timeout = \"60s\"\n\
         data-timeout = \"60s\"\n",
        p.max_connections,
        (2 * p.message_size + 4096).max(1 << 20),
    )
}

fn scenario(p: &Params) -> BenchResult<Scenario> {
    Scenario::from_toml("bench.toml", &scenario_toml(p)).map_err(|e| format!("bench scenario: {e}"))
}

/// The most connections the bench opens: the message phases' and the connection phase's.
fn max_connections(p: &Params) -> usize {
    2 + p.latency_messages.div_ceil(p.per_conn)
        + p.messages.div_ceil(p.per_conn)
        + p.clients
        + p.connections
}

/// The client number of the calibration's message; the latency phase's client is 0 and the
/// throughput phase's are 1 up to `clients`.
fn calibration_client(p: &Params) -> usize {
    p.clients + 1
}

/// How many journal events a connection and a message make, counted on quiet connections
/// before the load. The totals checked at the end are made of these, so the check follows
/// the journal's vocabulary as the engine grows it, and still catches any event lost or
/// added under load.
#[derive(Debug, Clone, Copy)]
struct Calibration {
    /// Events the farm records before any connection (such as its start).
    at_start: u64,
    per_connection: u64,
    per_message: u64,
}

impl Calibration {
    fn events(&self, messages: usize, connections: usize) -> u64 {
        self.at_start
            + self.per_message * messages as u64
            + self.per_connection * connections as u64
    }
}

/// The part of every message after its headers, as kept and as sent.
struct Body {
    text: String,
    /// Dot-stuffed, with the final dot.
    wire: Vec<u8>,
}

/// Built once: the clients must spend their time talking, not formatting.
fn body() -> &'static Body {
    BODY.get()
        .expect("the body is built before the clients start")
}

static BODY: OnceLock<Body> = OnceLock::new();

/// Builds the common body for messages of about `size` bytes.
fn build_body(size: usize) {
    BODY.get_or_init(|| {
        // One line starting with a dot, so that dot-unstuffing is on the measured path.
        let mut text = String::from(".This line starts with a dot and is sent dot-stuffed.\r\n");
        let filler = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
        while text.len() + filler.len() + HEADERS_SIZE <= size {
            text.push_str(filler);
        }
        let mut wire = Vec::with_capacity(text.len() + 8);
        for line in text.split_inclusive("\r\n") {
            if line.starts_with('.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line.as_bytes());
        }
        wire.extend_from_slice(b".\r\n");
        Body { text, wire }
    });
}

/// The headers of message `seq` of `client`; no line starts with a dot.
fn headers(client: usize, seq: usize, rcpt: &str) -> String {
    format!(
        "From: Bench Sender <sender@bench.test>\r\n\
         To: <{rcpt}>\r\n\
         Subject: mxfarm bench {client}/{seq}\r\n\
         Message-ID: <{}>\r\n\
         Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n",
        message_id(client, seq)
    )
}

/// What the farm must keep of a message: unstuffed, without the final dot.
fn message_text(client: usize, seq: usize, rcpt: &str) -> Vec<u8> {
    let mut text = headers(client, seq, rcpt).into_bytes();
    text.extend_from_slice(body().text.as_bytes());
    text
}

fn message_id(client: usize, seq: usize) -> String {
    format!("{client}.{seq}@bench.test")
}

/// A raw SMTP client connection with its own read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    /// What the next write sends, reused.
    out: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> BenchResult<Self> {
        let stream = io(TcpStream::connect(addr), "connect").await?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            start: 0,
            out: Vec::with_capacity(HEADERS_SIZE + body().wire.len() + 512),
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> BenchResult {
        io(self.stream.write_all(bytes), "write").await
    }

    /// Sends `self.out` in one write.
    async fn write_out(&mut self) -> BenchResult {
        io(self.stream.write_all(&self.out), "write").await
    }

    /// Reads one whole reply that must have `code`; returns its last line, without CRLF.
    async fn expect(&mut self, code: u16, after: &str) -> BenchResult<&str> {
        let mut lines = 0;
        loop {
            let range = self.line().await?;
            lines += 1;
            let line = &self.buf[range.clone()];
            let got = line
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok());
            let last = match line.get(3) {
                Some(b' ') | None => Some(true),
                Some(b'-') if lines < 100 => Some(false),
                _ => None,
            };
            let Some(last) = last.filter(|_| got == Some(code)) else {
                return Err(format!(
                    "expected {code} after {after}, got {:?}",
                    String::from_utf8_lossy(line)
                ));
            };
            if last {
                return std::str::from_utf8(&self.buf[range])
                    .map_err(|_| format!("reply after {after} is not UTF-8"));
            }
        }
    }

    /// The next line in `self.buf`, without CRLF; valid until the next read.
    async fn line(&mut self) -> BenchResult<std::ops::Range<usize>> {
        loop {
            if let Some(end) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let line = self.start..self.start + end;
                self.start += end + 1;
                let cr = self.buf[line.clone()].ends_with(b"\r");
                return Ok(line.start..line.end - usize::from(cr));
            }
            if self.buf.len() - self.start > 64 * 1024 {
                return Err("reply line longer than 64 KiB".into());
            }
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.reserve(4096);
            let n = io(self.stream.read_buf(&mut self.buf), "read").await?;
            if n == 0 {
                return Err("the farm closed the connection".into());
            }
        }
    }

    /// Reads until the farm closes the connection; nothing more may arrive.
    async fn expect_close(&mut self) -> BenchResult {
        let mut rest = Vec::new();
        let n = io(self.stream.read_to_end(&mut rest), "read to close").await?;
        if n > 0 || self.start < self.buf.len() {
            return Err(format!(
                "unexpected bytes before close: {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        Ok(())
    }

    /// Greeting and EHLO; PIPELINING must be offered.
    async fn open(addr: SocketAddr, name: &str) -> BenchResult<Self> {
        let mut conn = Self::connect(addr).await?;
        conn.expect(220, "connect").await?;
        conn.write(format!("EHLO {name}\r\n").as_bytes()).await?;
        let mut pipelining = false;
        loop {
            let range = conn.line().await?;
            let line = &conn.buf[range];
            if line.len() < 4 || !line.starts_with(b"250") {
                return Err(format!("EHLO reply: {:?}", String::from_utf8_lossy(line)));
            }
            pipelining |= line[4..].eq_ignore_ascii_case(b"PIPELINING");
            if line[3] == b' ' {
                break;
            }
        }
        if !pipelining {
            return Err("the farm does not offer PIPELINING".into());
        }
        Ok(conn)
    }

    async fn quit(mut self) -> BenchResult {
        self.write(b"QUIT\r\n").await?;
        self.expect(221, "QUIT").await?;
        self.expect_close().await
    }

    /// One pipelined transaction: MAIL, RCPT and DATA in one write, then the content.
    /// Returns the farm's message number from the `queued as` reply.
    async fn send(&mut self, client: usize, seq: usize) -> BenchResult<u64> {
        let rcpt = format!("rcpt-{client}-{seq}@example.test");
        let headers = headers(client, seq, &rcpt);
        let size = headers.len() + body().wire.len();
        self.out.clear();
        write!(
            self.out,
            "MAIL FROM:<sender@bench.test> SIZE={size}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        )
        .map_err(|e| e.to_string())?;
        self.write_out().await?;
        self.expect(250, "MAIL").await?;
        self.expect(250, "RCPT").await?;
        self.expect(354, "DATA").await?;
        self.out.clear();
        self.out.extend_from_slice(headers.as_bytes());
        self.out.extend_from_slice(&body().wire);
        self.write_out().await?;
        let queued = self.expect(250, "end of data").await?;
        queued
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no message number in {queued:?}"))
    }
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

/// What one client of the message phases did.
#[derive(Default)]
struct Sent {
    ids: Vec<u64>,
    latencies: Vec<Duration>,
    connections: usize,
}

/// Sends `count` messages, `per_conn` per connection, from client number `client`.
async fn send_messages(
    addr: SocketAddr,
    client: usize,
    first_seq: usize,
    count: usize,
    per_conn: usize,
) -> BenchResult<Sent> {
    let mut sent = Sent {
        ids: Vec::with_capacity(count),
        latencies: Vec::with_capacity(count),
        connections: 0,
    };
    let mut seq = first_seq;
    let end = first_seq + count;
    while seq < end {
        let mut conn = Conn::open(addr, &format!("client{client}.bench.test")).await?;
        sent.connections += 1;
        let batch_end = end.min(seq + per_conn);
        while seq < batch_end {
            let started = Instant::now();
            let id = conn
                .send(client, seq)
                .await
                .map_err(|e| format!("client {client} message {seq}: {e}"))?;
            sent.latencies.push(started.elapsed());
            sent.ids.push(id);
            seq += 1;
        }
        conn.quit().await?;
    }
    Ok(sent)
}

/// Splits `total` over `clients`: client `i` gets `(first, count)`.
fn shares(total: usize, clients: usize) -> Vec<(usize, usize)> {
    let clients = clients.min(total.max(1));
    let mut first = 0;
    (0..clients)
        .map(|i| {
            let count = total / clients + usize::from(i < total % clients);
            let share = (first, count);
            first += count;
            share
        })
        .collect()
}

async fn message_phase(
    addr: SocketAddr,
    clients: usize,
    client_base: usize,
    total: usize,
    per_conn: usize,
) -> BenchResult<(Sent, Duration)> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (first, count)) in shares(total, clients).into_iter().enumerate() {
        tasks.spawn(send_messages(addr, client_base + i, first, count, per_conn));
    }
    let mut all = Sent::default();
    while let Some(joined) = tasks.join_next().await {
        let sent = joined.map_err(|e| format!("client task: {e}"))??;
        all.ids.extend(sent.ids);
        all.latencies.extend(sent.latencies);
        all.connections += sent.connections;
    }
    Ok((all, started.elapsed()))
}

async fn connection_phase(
    addr: SocketAddr,
    clients: usize,
    total: usize,
) -> BenchResult<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, count)) in shares(total, clients).into_iter().enumerate() {
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let conn = Conn::open(addr, &format!("conn{i}.bench.test")).await?;
                conn.quit().await?;
                times.push(t.elapsed());
            }
            BenchResult::Ok(times)
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.map_err(|e| format!("client task: {e}"))??);
    }
    Ok((all, started.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_line(what: &str, mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "{what:<34} p50 {:>8.0} us   p99 {:>8.0} us   max {:>8.0} us   (n={})",
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
        us(samples.last().copied().unwrap_or_default()),
        samples.len()
    )
}

/// `(VmRSS, VmHWM)` of this process in KiB, from /proc/self/status.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time used so far by this process's threads called `name` (the runtimes name their
/// workers "farm" and "client"), from /proc/self/task/*/schedstat. It moves less than the
/// rates when other programs compete for the CPU, though it still moves.
fn cpu_time(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// Microseconds of CPU per item.
fn micros_each(cpu: Duration, items: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / items.max(1) as f64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// How many events the journal recorded in all (sequence numbers have no gaps, so the
/// last one), and how many of them it no longer holds.
fn recorded_events(journal: &[Event]) -> (u64, u64) {
    let last_seq = journal.last().map_or(0, |e| e.seq);
    (last_seq, last_seq - journal.len() as u64)
}

/// The journal once the farm has recorded `expected` events, or after 5 s. A session
/// journals its connection's end after closing the socket, so a client that saw the close
/// may be a moment ahead of the journal.
fn settled_journal(farm: &Farm, expected: u64) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let journal = farm.journal();
        if recorded_events(&journal).0 >= expected || Instant::now() >= deadline {
            return journal;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the journal holds `closed` connection ends (at most 5 s), then returns how
/// many events it recorded.
fn recorded_after_closes(farm: &Farm, closed: usize) -> BenchResult<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let journal = farm.journal();
        let ends = journal
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ConnectionClosed { .. }))
            .count();
        if ends >= closed {
            return Ok(recorded_events(&journal).0);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the journal shows {ends} connection ends, expected {closed}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One connection without mail, then one with one message, each alone on the farm.
/// Returns the calibration and the message's number.
fn calibrate(
    farm: &Farm,
    clients: &tokio::runtime::Runtime,
    addr: SocketAddr,
    p: &Params,
) -> BenchResult<(Calibration, u64)> {
    let at_start = recorded_after_closes(farm, 0)?;
    clients.block_on(async {
        Conn::open(addr, "calibration.bench.test")
            .await?
            .quit()
            .await
    })?;
    let one_connection = recorded_after_closes(farm, 1)?;
    let sent = clients.block_on(send_messages(addr, calibration_client(p), 0, 1, 1))?;
    let with_message = recorded_after_closes(farm, 2)?;
    let per_connection = one_connection.saturating_sub(at_start);
    let per_message = (with_message - one_connection)
        .checked_sub(per_connection)
        .filter(|&n| n > 0 && per_connection > 0)
        .ok_or_else(|| {
            format!(
                "odd journal: {at_start} events at the start, {one_connection} after a \
                 connection, {with_message} after another with a message"
            )
        })?;
    let calibration = Calibration {
        at_start,
        per_connection,
        per_message,
    };
    println!(
        "journal: {} events per connection (EHLO, QUIT), {} more per message",
        calibration.per_connection, calibration.per_message
    );
    Ok((calibration, sent.ids[0]))
}

/// Checks the farm's view against what the clients saw. The clients already checked
/// every reply; here the farm's own records must agree: every message numbered once, the
/// messages still kept byte-exact, and exactly the journal events the run should make.
fn verify(
    farm: &Farm,
    p: &Params,
    ids: &[u64],
    connections: usize,
    calibration: Calibration,
) -> BenchResult {
    // The calibration's message counts too.
    let total = p.latency_messages + p.messages + 1;
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    // Only this bench talks to the farm, so its message numbers must be exactly 1..=total.
    if !sorted.iter().copied().eq(1..=total as u64) {
        return Err(format!(
            "clients got {} acceptances (numbers {:?}..{:?}), expected exactly 1..={total}",
            sorted.len(),
            sorted.first(),
            sorted.last()
        ));
    }

    // The capture keeps the newest messages up to its limits: as many as fit in count and
    // in bytes.
    let limits = &farm.scenario().capture;
    let messages = farm.messages();
    let kept_bytes: u64 = messages.iter().map(|m| m.data.len() as u64).sum();
    let longest = message_text(
        calibration_client(p),
        total,
        "rcpt-0000-00000000@example.test",
    )
    .len();
    let most = total.min(limits.max_messages);
    let least = most.min((limits.max_bytes / longest as u64) as usize);
    if !(least..=most).contains(&messages.len()) || kept_bytes > limits.max_bytes {
        return Err(format!(
            "the farm keeps {} messages ({kept_bytes} bytes), expected {least}..={most}",
            messages.len()
        ));
    }
    let mut seen = HashSet::with_capacity(messages.len());
    // Which ones are kept is not checked against their numbers: a session numbers a message
    // before it keeps it, so under CPU pressure messages are kept out of number order.
    for m in &messages {
        if !(1..=total as u64).contains(&m.id) {
            return Err(format!("message {} was kept but never acknowledged", m.id));
        }
        let id = m
            .message_id
            .as_deref()
            .ok_or_else(|| format!("message {} has no Message-ID", m.id))?;
        if !seen.insert(id) {
            return Err(format!("Message-ID {id} kept twice"));
        }
        let (client, seq): (usize, usize) = id
            .strip_suffix("@bench.test")
            .and_then(|s| s.split_once('.'))
            .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)))
            .ok_or_else(|| format!("message {} has a foreign Message-ID {id}", m.id))?;
        let rcpt = format!("rcpt-{client}-{seq}@example.test");
        let text = message_text(client, seq, &rcpt);
        if *m.data != *text || m.size != text.len() as u64 {
            return Err(format!(
                "message {id}: kept {} bytes (size {}) that differ from the {} sent",
                m.data.len(),
                m.size,
                text.len()
            ));
        }
        if m.sender != "sender@bench.test" || m.recipients != [rcpt] {
            return Err(format!(
                "message {id}: envelope {} -> {:?}",
                m.sender, m.recipients
            ));
        }
    }

    let expected = calibration.events(total, connections);
    let journal = settled_journal(farm, expected);
    let (recorded, dropped) = recorded_events(&journal);
    for event in &journal {
        match &event.kind {
            EventKind::ConnectionClosed {
                by, reason, conn, ..
            } if *by != ClosedBy::Client || reason != "QUIT" => {
                return Err(format!("connection {conn} closed by {by:?}: {reason}"));
            }
            EventKind::Reply { reply, conn, .. } if reply.code >= 400 => {
                return Err(format!("connection {conn} got {}", reply.one_line()));
            }
            _ => {}
        }
    }
    if recorded != expected {
        return Err(format!(
            "the journal recorded {recorded} events, expected {expected} for {total} messages \
             over {connections} connections"
        ));
    }
    if p.keep_all && dropped > 0 {
        return Err("the journal dropped events although sized for the whole run".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let params = match Params::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("throughput bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--print-scenario") {
        print!("{}", scenario_toml(&params));
        return ExitCode::SUCCESS;
    }
    match run(&params) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize, name: &str) -> BenchResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("{name} runtime: {e}"))
}

fn run(p: &Params) -> BenchResult {
    build_body(p.message_size);
    let (rss_start, _) = memory();
    println!(
        "mxfarm throughput bench{}: {} clients, {} messages ({} per connection, ~{} B each), \
         {} latency messages, {} connections; farm {} threads, clients {} threads; {}",
        if p.quick { " (quick)" } else { "" },
        p.clients,
        p.messages,
        p.per_conn,
        p.message_size,
        p.latency_messages,
        p.connections,
        p.farm_threads,
        p.client_threads,
        if p.keep_all {
            "capture and journal keep everything"
        } else {
            "capture and journal at their default limits"
        },
    );

    // The farm runs on its own runtime, as if it were its own process; the clients on
    // another, so that neither's scheduling flatters the other.
    let farm_rt = runtime(p.farm_threads, "farm")?;
    let client_rt = runtime(p.client_threads, "client")?;
    let scenario = scenario(p)?;
    let mut options = FarmOptions::ephemeral();
    if let Some(path) = &p.journal_file {
        println!(
            "journal file: {}{}",
            path.display(),
            if p.journal_fsync {
                ", fsync before every 250"
            } else {
                ""
            }
        );
        options = options.journal_file(JournalFileOptions {
            fsync: p.journal_fsync,
            ..JournalFileOptions::new(path)
        });
    }
    let farm = farm_rt
        .block_on(Farm::start_with(scenario, options))
        .map_err(|e| format!("farm: {e}"))?;
    let addr = farm.addr("mx1");
    if !addr.ip().is_loopback() {
        return Err(format!("the farm listens on {addr}, not on loopback"));
    }

    let outcome = calibrate(&farm, &client_rt, addr, p).and_then(|(calibration, id)| {
        let (mut ids, connections) = client_rt.block_on(async {
            tokio::time::timeout(p.timeout, phases(p, addr))
                .await
                .map_err(|_| format!("the bench did not finish within {:?}", p.timeout))?
        })?;
        ids.push(id);
        // The calibration's two connections count too.
        Ok((ids, connections + 2, calibration))
    });
    let (rss_after, hwm) = memory();
    let journal = farm.journal_memory();
    let verified = outcome.and_then(|(ids, connections, calibration)| {
        verify(&farm, p, &ids, connections, calibration)
    });

    let shut = farm_rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), farm.shutdown())
            .await
            .map_err(|_| "the farm did not shut down within 10s".to_string())
    });
    drop(client_rt);
    farm_rt.shutdown_timeout(Duration::from_secs(5));
    let (rss_end, _) = memory();
    verified?;
    shut?;

    println!(
        "memory (whole bench process: farm + clients)   start {}   peak (VmHWM) {}   \
         after the run {}   after shutdown {}",
        mib(rss_start),
        mib(hwm),
        mib(rss_after),
        mib(rss_end)
    );
    println!(
        "journal in memory: {} events in {} KiB, {:.1} bytes per event",
        journal.events,
        journal.bytes / 1024,
        journal.bytes as f64 / journal.events.max(1) as f64
    );
    println!(
        "verified: every message acknowledged once with its own number, the kept ones \
         byte-exact, the journal's event count exact, no error reply"
    );
    println!("RESULT peak_rss_kib={hwm} rss_after_kib={rss_after} rss_start_kib={rss_start}");
    println!(
        "RESULT journal_events={} journal_bytes={}",
        journal.events, journal.bytes
    );
    Ok(())
}

/// Runs the three phases and returns every message number the farm acknowledged.
async fn phases(p: &Params, addr: SocketAddr) -> BenchResult<(Vec<u64>, usize)> {
    // 1. Latency on an idle farm: one client, one transaction at a time.
    let (idle, _) = message_phase(addr, 1, 0, p.latency_messages, p.per_conn).await?;
    println!(
        "{}",
        latency_line("transaction latency, idle farm", idle.latencies)
    );

    // 2. Throughput.
    let (farm_cpu, client_cpu) = (cpu_time("farm"), cpu_time("client"));
    let (loaded, elapsed) = message_phase(addr, p.clients, 1, p.messages, p.per_conn).await?;
    let farm_per_message = micros_each(cpu_time("farm") - farm_cpu, p.messages);
    let client_per_message = micros_each(cpu_time("client") - client_cpu, p.messages);
    let secs = elapsed.as_secs_f64();
    let rate = p.messages as f64 / secs;
    println!(
        "throughput: {} messages in {:.2} s = {:.0} messages/s ({:.1} MiB/s of content)",
        p.messages,
        secs,
        rate,
        rate * p.message_size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "CPU per message: farm {farm_per_message:.1} us, clients {client_per_message:.1} us \
         (user + system, all threads of each runtime)"
    );
    let (rss, _) = memory();
    println!(
        "{}",
        latency_line(
            &format!("transaction latency, {} clients", p.clients),
            loaded.latencies
        )
    );
    println!("memory after the throughput phase: RSS {}", mib(rss));

    // 3. Connection rate.
    let farm_cpu = cpu_time("farm");
    let (times, elapsed) = connection_phase(addr, p.clients, p.connections).await?;
    let farm_per_connection = micros_each(cpu_time("farm") - farm_cpu, p.connections);
    let connections = idle.connections + loaded.connections + times.len();
    let secs = elapsed.as_secs_f64();
    let conn_rate = p.connections as f64 / secs;
    println!(
        "connections: {} in {:.2} s = {:.0} connections/s (connect, EHLO, QUIT)",
        p.connections, secs, conn_rate
    );
    println!(
        "{}",
        latency_line(&format!("connection, {} clients", p.clients), times)
    );
    println!("CPU per connection: farm {farm_per_connection:.1} us");
    println!(
        "RESULT messages_per_sec={rate:.0} connections_per_sec={conn_rate:.0} \
         farm_cpu_us_per_message={farm_per_message:.1} \
         farm_cpu_us_per_connection={farm_per_connection:.1}"
    );

    let mut ids = idle.ids;
    ids.extend(loaded.ids);
    Ok((ids, connections))
}
