//! Sessions over in-memory streams under tokio's paused time: hours of farm time in no
//! real time, and a seeded stream of hostile input that must never crash a host.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::journal::ClosedBy;
use mxfarm::testing::SmtpClient;
use mxfarm::{EventKind, Farm, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

async fn start(toml: &str) -> Farm {
    Farm::start_ephemeral(Scenario::from_toml("test.toml", toml).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_hour_long_hang_then_the_timeout_take_no_real_time() {
    let farm = start(
        r#"
name = "slow"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "hang@y.test" }
then = { hang = "1h" }
[[host.rule]]
stage = "mail"
then = { delay = "90s" }
"#,
    )
    .await;
    let started = std::time::Instant::now();
    let mut c = SmtpClient::over(farm.connect_in_memory("mx1", client()).unwrap());
    c.send("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<hang@y.test>\r\n")
        .await;
    c.greeting().await;
    c.expect_code(250).await;
    c.expect("250 2.1.0 Ok").await;
    // The hang at RCPT ends without a reply.
    c.expect_closed().await;
    assert!(started.elapsed() < Duration::from_secs(5), "paused time");

    let journal = farm.journal();
    let closed = journal.last().unwrap();
    match &closed.kind {
        EventKind::ConnectionClosed { by, .. } => assert_eq!(*by, ClosedBy::Farm),
        other => panic!("{other:?}"),
    }
    // 90 s of tarpit at MAIL, then the hour of hanging at RCPT, in farm time.
    assert_eq!(closed.at.as_secs(), 90 + 3600);

    // An idle connection meets the 5 minute command timeout.
    let mut idle = SmtpClient::over(farm.connect_in_memory("mx1", client()).unwrap());
    idle.greeting().await;
    idle.expect("421 4.4.2 mx1.farm.test Error: timeout exceeded")
        .await;
    idle.expect_closed().await;
    farm.shutdown().await;
}

/// A small seeded generator, so a failure can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_input_gets_protocol_errors_never_a_crash() {
    let farm = start(
        r#"
name = "target"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[host.limits]
max-message-size = "64KiB"
max-line-length = 200
"#,
    )
    .await;
    let pieces: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"HELO \xff\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<c@d>\r\n",
        b"RCPT TO:<\x00>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"..\r\n",
        b"BDAT 10\r\n",
        b"BDAT 0 LAST\r\n",
        b"BDAT 99999999999999999999\r\n",
        b"RSET\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"QUIT\r\n",
        b"NOOP\r\n",
        b"MAIL FROM:<a@b> SIZE=99999999999\r\n",
        b"AUTH PLAIN AAAA\r\n",
        b"STARTTLS\r\n",
        b"\x16\x03\x01\x00\xa5\x01",
        b"x",
    ];
    let mut rng = Lcg(0x5eed);
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..(rng.next() % 40) {
            match rng.next() % 4 {
                0 => input.extend((0..rng.next() % 300).map(|_| rng.next() as u8)),
                _ => input.extend_from_slice(pieces[(rng.next() as usize) % pieces.len()]),
            }
        }
        // Raw bytes, half-closed after the last one, and every reply byte read back: more
        // than a scripted client does.
        let mut stream = farm.connect_in_memory("mx1", client()).unwrap();
        let (mut read, mut write) = tokio::io::split(&mut stream);
        let writer = async {
            let _ = write.write_all(&input).await;
            let _ = write.shutdown().await;
        };
        let mut replies = Vec::new();
        let reader = read.read_to_end(&mut replies);
        let (_, read) = tokio::join!(writer, reader);
        read.unwrap();
        // Every reply line is well formed: three digits then a space or a hyphen.
        for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
                "bad reply line {:?} for input {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&input)
            );
        }
    }
    // The host still serves.
    let mut c = SmtpClient::over(farm.connect_in_memory("mx1", client()).unwrap());
    c.send("QUIT\r\n").await;
    c.greeting().await;
    c.expect("221 2.0.0 Bye").await;
    c.expect_closed().await;
    let closed = farm
        .journal()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ConnectionClosed { .. }))
        .count();
    assert_eq!(closed, 301, "every session ended and said so");
    farm.shutdown().await;
}
