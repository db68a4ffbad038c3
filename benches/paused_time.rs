//! How fast a long retry schedule runs in paused time: a sender retrying for two days
//! against a mailbox that is full for 48 hours, through in-memory connections, under
//! tokio's paused clock. Tests assert that such a run gives the same transcript each time;
//! how much real time it takes is measured here, since a real-time bound in a test fails on
//! a busy machine.
//!
//! `cargo bench --bench paused_time` (add `-- --quick` for a short run). Prints one
//! `RESULT` line: real milliseconds per two-day run and attempts per real second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mxfarm::{Farm, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCENARIO: &str = r#"
name = "quota"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@farm.test", first-attempt-within = "2d", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
"#;

/// One whole run: attempts every 30 minutes until the message is accepted; returns the
/// number of attempts.
async fn two_days_of_retries() -> usize {
    let scenario = Scenario::from_toml("quota.toml", SCENARIO).expect("the bench scenario");
    let farm = Farm::start_ephemeral(scenario).await.expect("the farm");
    let client: SocketAddr = "192.0.2.10:40000".parse().expect("an address");
    let script = b"EHLO client.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<full@farm.test>\r\n\
        DATA\r\nSubject: two days\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    for attempt in 1.. {
        let mut stream = farm.connect_in_memory("mx1", client).expect("host mx1");
        stream.write_all(script).await.expect("write");
        let mut replies = String::new();
        stream.read_to_string(&mut replies).await.expect("read");
        if replies.contains("queued as") {
            farm.shutdown().await;
            return attempt;
        }
        assert!(attempt < 1000, "never delivered:\n{replies}");
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    }
    unreachable!("the loop returns")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
    let runs = if quick { 3 } else { 20 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let mut attempts = 0;
    for _ in 0..runs {
        attempts += runtime.block_on(two_days_of_retries());
    }
    let took = started.elapsed();
    let per_run = took.as_secs_f64() * 1000.0 / runs as f64;
    println!(
        "paused time: {runs} runs of a two-day schedule ({} attempts each) in {took:.2?}",
        attempts / runs as usize
    );
    println!(
        "RESULT ms_per_two_day_run={per_run:.1} attempts_per_real_sec={:.0}",
        attempts as f64 / took.as_secs_f64()
    );
}
