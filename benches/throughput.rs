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
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxfarm::journal::{ClosedBy, EventKind};
use mxfarm::{Farm, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read or write may take before the bench gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Approximate size of each message, headers included.
const MESSAGE_SIZE: usize = 2048;

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
}

impl Params {
    fn from_env() -> BenchResult<Self> {
        let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (clients, messages, per_conn, latency, connections) = if quick {
            (8, 2_000, 50, 200, 1_000)
        } else {
            (50, 20_000, 100, 2_000, 10_000)
        };
        let params = Self {
            quick,
            clients: env_usize("MXFARM_BENCH_CLIENTS", clients)?,
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
        };
        let positive = [
            ("MXFARM_BENCH_CLIENTS", params.clients),
            ("MXFARM_BENCH_PER_CONN", params.per_conn),
            ("MXFARM_BENCH_FARM_THREADS", params.farm_threads),
            ("MXFARM_BENCH_CLIENT_THREADS", params.client_threads),
            (
                "MXFARM_BENCH_TIMEOUT_SECS",
                params.timeout.as_secs() as usize,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        // Bounds that keep the bench within what one machine's loopback and memory allow.
        let limits = [
            ("MXFARM_BENCH_CLIENTS", params.clients, 1_000),
            ("MXFARM_BENCH_MESSAGES", params.messages, 2_000_000),
            (
                "MXFARM_BENCH_LATENCY_MESSAGES",
                params.latency_messages,
                100_000,
            ),
            ("MXFARM_BENCH_CONNECTIONS", params.connections, 25_000),
            ("MXFARM_BENCH_FARM_THREADS", params.farm_threads, 64),
            ("MXFARM_BENCH_CLIENT_THREADS", params.client_threads, 64),
        ];
        for (name, value, max) in limits {
            if value > max {
                return Err(format!(
                    "{name}={value} is above the bench's limit of {max}"
                ));
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

fn scenario(p: &Params) -> BenchResult<Scenario> {
    let total_messages = p.messages + p.latency_messages;
    // Per message: MAIL, RCPT, DATA commands and their replies, the acceptance and the 250;
    // per connection: opened, greeting, EHLO and reply, QUIT and reply, closed.
    let conns = p.messages.div_ceil(p.per_conn) + p.clients + 1 + p.connections;
    let events = total_messages * 8 + conns * 7 + 1_000;
    let toml = format!(
        r#"
        name = "bench"
        description = "One host, no rules: the engine's fast path"

        [capture]
        max-messages = {total_messages}
        max-bytes = "{capture_bytes}"

        [journal]
        max-events = {events}

        [[host]]
        name = "mx1"
        listen = "127.0.0.1:2525"

        [host.limits]
        max-connections = {max_connections}
        max-recipients = 100
        max-message-size = "1MiB"
        max-errors = 1
        command-timeout = "60s"
        data-timeout = "60s"
        "#,
        capture_bytes = (total_messages as u64 + 1) * (MESSAGE_SIZE as u64 + 1024),
        max_connections = p.clients * 4 + 100,
    );
    Scenario::from_toml("bench.toml", &toml).map_err(|e| format!("bench scenario: {e}"))
}

/// A message of about [`MESSAGE_SIZE`] bytes, as sent (dot-stuffed, with the final dot),
/// and the number of bytes the farm must keep of it (unstuffed, without the final dot).
fn message(client: usize, seq: usize, rcpt: &str) -> (Vec<u8>, usize) {
    let mut text = format!(
        "From: Bench Sender <sender@bench.test>\r\n\
         To: <{rcpt}>\r\n\
         Subject: mxfarm bench {client}/{seq}\r\n\
         Message-ID: <{}>\r\n\
         Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n",
        message_id(client, seq)
    );
    // One line starting with a dot, so that dot-unstuffing is on the measured path.
    text.push_str(".This line starts with a dot and is sent dot-stuffed.\r\n");
    let filler = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while text.len() + filler.len() <= MESSAGE_SIZE {
        text.push_str(filler);
    }
    let kept = text.len();
    let mut wire = Vec::with_capacity(text.len() + 8);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line.as_bytes());
    }
    wire.extend_from_slice(b".\r\n");
    (wire, kept)
}

fn message_id(client: usize, seq: usize) -> String {
    format!("{client}.{seq}@bench.test")
}

/// A raw SMTP client connection with its own read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
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
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> BenchResult {
        io(self.stream.write_all(bytes), "write").await
    }

    /// Reads one whole reply and returns its code and its last line (without CRLF).
    async fn reply(&mut self) -> BenchResult<(u16, String)> {
        let mut lines = 0;
        loop {
            let line = self.line().await?;
            lines += 1;
            let text = String::from_utf8_lossy(&line).into_owned();
            let code = text
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("malformed reply line {text:?}"))?;
            match text.as_bytes().get(3) {
                Some(b'-') if lines < 100 => continue,
                Some(b' ') | None => return Ok((code, text)),
                _ => return Err(format!("malformed reply line {text:?}")),
            }
        }
    }

    /// Reads a reply that must have `code`.
    async fn expect(&mut self, code: u16, after: &str) -> BenchResult<String> {
        let (got, text) = self.reply().await?;
        if got == code {
            Ok(text)
        } else {
            Err(format!("expected {code} after {after}, got {text:?}"))
        }
    }

    async fn line(&mut self) -> BenchResult<Vec<u8>> {
        loop {
            if let Some(end) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.start..self.start + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.start += end + 1;
                return Ok(line);
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
            let line = conn.line().await?;
            if line.len() < 4 || !line.starts_with(b"250") {
                return Err(format!("EHLO reply: {:?}", String::from_utf8_lossy(&line)));
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
        let (body, _) = message(client, seq, &rcpt);
        let envelope = format!(
            "MAIL FROM:<sender@bench.test> SIZE={}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n",
            body.len()
        );
        self.write(envelope.as_bytes()).await?;
        self.expect(250, "MAIL").await?;
        self.expect(250, "RCPT").await?;
        self.expect(354, "DATA").await?;
        self.write(&body).await?;
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
    };
    let mut seq = first_seq;
    let end = first_seq + count;
    while seq < end {
        let mut conn = Conn::open(addr, &format!("client{client}.bench.test")).await?;
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

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Checks the farm's view against what the clients saw.
fn verify(farm: &Farm, p: &Params, ids: &[u64]) -> BenchResult {
    let total = p.latency_messages + p.messages;
    if ids.len() != total {
        return Err(format!(
            "clients got {} acceptances, expected {total}",
            ids.len()
        ));
    }
    let distinct: HashSet<u64> = ids.iter().copied().collect();
    if distinct.len() != total {
        return Err(format!(
            "the farm gave {} distinct message numbers for {total} messages",
            distinct.len()
        ));
    }

    let messages = farm.messages();
    if messages.len() != total {
        return Err(format!(
            "the farm keeps {} messages, expected {total}",
            messages.len()
        ));
    }
    let mut expected: HashSet<String> = HashSet::with_capacity(total);
    // The latency phase's one client is number 0; the throughput clients are 1 and up.
    expected.extend((0..p.latency_messages).map(|seq| message_id(0, seq)));
    for (i, (first, count)) in shares(p.messages, p.clients).into_iter().enumerate() {
        expected.extend((first..first + count).map(|seq| message_id(i + 1, seq)));
    }
    for m in &messages {
        let id = m
            .message_id
            .as_deref()
            .ok_or_else(|| format!("message {} has no Message-ID", m.id))?;
        if !expected.remove(id) {
            return Err(format!(
                "message {} has unexpected or repeated Message-ID {id}",
                m.id
            ));
        }
        if !distinct.contains(&m.id) {
            return Err(format!("message {} was kept but not acknowledged", m.id));
        }
        let (client, seq) = id
            .strip_suffix("@bench.test")
            .and_then(|s| s.split_once('.'))
            .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)))
            .ok_or_else(|| format!("message {} has a foreign Message-ID {id}", m.id))?;
        let rcpt = format!("rcpt-{client}-{seq}@example.test");
        let (_, kept) = message(client, seq, &rcpt);
        if m.data.len() != kept || m.size != kept as u64 {
            return Err(format!(
                "message {id}: kept {} bytes (size {}), sent {kept}",
                m.data.len(),
                m.size
            ));
        }
        if m.sender != "sender@bench.test" || m.recipients != [rcpt] {
            return Err(format!(
                "message {id}: envelope {} -> {:?}",
                m.sender, m.recipients
            ));
        }
    }
    if let Some(missing) = expected.iter().next() {
        return Err(format!(
            "{} messages missing from the capture, e.g. {missing}",
            expected.len()
        ));
    }

    let journal = farm.journal();
    let mut accepted = 0;
    let mut opened = 0;
    let mut closed = 0;
    for event in &journal {
        match &event.kind {
            EventKind::EventsDropped { count, .. } => {
                return Err(format!("the journal dropped {count} events"));
            }
            EventKind::MessageAccepted { .. } => accepted += 1,
            EventKind::ConnectionOpened { .. } => opened += 1,
            EventKind::ConnectionClosed {
                by, reason, conn, ..
            } => {
                closed += 1;
                if *by != ClosedBy::Client || reason != "QUIT" {
                    return Err(format!("connection {conn} closed by {by:?}: {reason}"));
                }
            }
            EventKind::Reply { reply, conn, .. } if reply.code >= 400 => {
                return Err(format!("connection {conn} got {}", reply.one_line()));
            }
            _ => {}
        }
    }
    if accepted != total {
        return Err(format!(
            "the journal has {accepted} acceptances, expected {total}"
        ));
    }
    if opened != closed {
        return Err(format!("{opened} connections opened but {closed} closed"));
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
    let (rss_start, _) = memory();
    println!(
        "mxfarm throughput bench{}: {} clients, {} messages ({} per connection, ~{} B each), \
         {} latency messages, {} connections; farm {} threads, clients {} threads",
        if p.quick { " (quick)" } else { "" },
        p.clients,
        p.messages,
        p.per_conn,
        MESSAGE_SIZE,
        p.latency_messages,
        p.connections,
        p.farm_threads,
        p.client_threads,
    );

    // The farm runs on its own runtime, as if it were its own process; the clients on
    // another, so that neither's scheduling flatters the other.
    let farm_rt = runtime(p.farm_threads, "farm")?;
    let client_rt = runtime(p.client_threads, "client")?;
    let scenario = scenario(p)?;
    let farm = farm_rt
        .block_on(Farm::start_ephemeral(scenario))
        .map_err(|e| format!("farm: {e}"))?;
    let farm = Arc::new(farm);
    let addr = farm.addr("mx1");
    if !addr.ip().is_loopback() {
        return Err(format!("the farm listens on {addr}, not on loopback"));
    }

    let outcome = client_rt.block_on(async {
        tokio::time::timeout(p.timeout, phases(p, addr))
            .await
            .map_err(|_| format!("the bench did not finish within {:?}", p.timeout))?
    });
    let (rss_after, hwm) = memory();
    let verified = outcome.and_then(|ids| verify(&farm, p, &ids));

    let farm = Arc::try_unwrap(farm).map_err(|_| "farm still shared".to_string())?;
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
        "verified: every message acknowledged once, kept byte-exact, journalled; \
         no error replies, no dropped events"
    );
    println!("RESULT peak_rss_kib={hwm} rss_after_kib={rss_after} rss_start_kib={rss_start}");
    Ok(())
}

/// Runs the three phases and returns every message number the farm acknowledged.
async fn phases(p: &Params, addr: SocketAddr) -> BenchResult<Vec<u64>> {
    // 1. Latency on an idle farm: one client, one transaction at a time.
    let (idle, _) = message_phase(addr, 1, 0, p.latency_messages, p.per_conn).await?;
    println!(
        "{}",
        latency_line("transaction latency, idle farm", idle.latencies)
    );

    // 2. Throughput.
    let (loaded, elapsed) = message_phase(addr, p.clients, 1, p.messages, p.per_conn).await?;
    let secs = elapsed.as_secs_f64();
    let rate = p.messages as f64 / secs;
    println!(
        "throughput: {} messages in {:.2} s = {:.0} messages/s ({:.1} MiB/s of content)",
        p.messages,
        secs,
        rate,
        rate * MESSAGE_SIZE as f64 / (1024.0 * 1024.0)
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
    let (times, elapsed) = connection_phase(addr, p.clients, p.connections).await?;
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
    println!("RESULT messages_per_sec={rate:.0} connections_per_sec={conn_rate:.0}");

    let mut ids = idle.ids;
    ids.extend(loaded.ids);
    Ok(ids)
}
