//! Rules that test DNS (`spf`, `fcrdns`, `helo-dns`), over real connections: the farm
//! looks each up through its own DNS server, so a slow or failing DNS answer holds or
//! changes the reply, and the journal has each lookup with the time it took.

use std::time::Duration;

use mxfarm::journal::{DnsReply, EventKind};

use crate::support::{farm, greeted};

/// The DNS checks the journal holds: (check, subject, result, took).
fn checks(farm: &mxfarm::Farm) -> Vec<(String, String, String, Duration)> {
    farm.journal()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::DnsCheck {
                check,
                subject,
                result,
                took,
                ..
            } => Some((check, subject, result, took)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn spf_pass_fail_and_temperror_after_a_slow_txt_lookup() {
    let farm = farm(
        r#"
name = "spf"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "mail"
when = { spf = "temperror" }
then = { reply = "451 4.7.1 SPF check failed for now, try again later" }
[[host.rule]]
stage = "mail"
when = { spf = ["fail", "softfail"] }
then = { reply = "550 5.7.1 SPF fail: {client} may not send for this domain" }
[dns]
records = [
  "pass.test TXT v=spf1 ip4:127.0.0.0/8 -all",
  "fail.test TXT v=spf1 ip4:192.0.2.0/24 -all",
  "slow.test TXT v=spf1 -all",
]
[[dns.rule]]
when = { query = "slow.test", type = "TXT" }
then = { answer = "servfail", delay = "8s" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send("MAIL FROM:<a@pass.test>\r\n").await;
    c.expect_code(250).await;
    c.send("RSET\r\n").await;
    c.expect_code(250).await;
    c.send("MAIL FROM:<a@fail.test>\r\n").await;
    c.expect("550 5.7.1 SPF fail: 127.0.0.1 may not send for this domain")
        .await;
    c.send("MAIL FROM:<a@slow.test>\r\n").await;
    // The TXT query waits 8 s on the farm's clock, and the MAIL reply with it.
    farm.wait_for(|e| matches!(&e.kind, EventKind::DnsQuery { answer: DnsReply::Held, name, .. } if name == "slow.test"))
        .await;
    farm.advance(Duration::from_secs(8));
    c.expect("451 4.7.1 SPF check failed for now, try again later")
        .await;
    let got = checks(&farm);
    let results: Vec<(&str, &str)> = got
        .iter()
        .map(|(c, _, r, _)| (c.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        results,
        [("spf", "pass"), ("spf", "fail"), ("spf", "temperror")]
    );
    assert_eq!(got[2].1, "<a@slow.test> from 127.0.0.1");
    assert!(got[2].3 >= Duration::from_secs(8), "took {:?}", got[2].3);
    // The queries the checks made are in the journal too, asked by the farm itself.
    let asked = farm
        .journal()
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::DnsQuery { name, qtype, by_farm: true, .. } if name.ends_with(".test") && qtype == "TXT"))
        .count();
    assert!(asked >= 3, "{asked} TXT queries journalled");
    farm.shutdown().await;
}

const CHECKS: &str = r#"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "ehlo"
when = { fcrdns = "fail" }
then = { reply = "550 5.7.25 The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP" }
[[host.rule]]
stage = "ehlo"
when = { helo-dns = "missing" }
then = { reply = "550 5.7.1 <{helo}>: Helo command rejected: Host not found" }
[[host.rule]]
stage = "ehlo"
when = { helo-dns = "mismatch" }
then = { reply = "550 5.7.1 <{helo}>: Helo command rejected: does not resolve to your address" }
[reverse-dns]
"127.0.0.1" = "mail.sender.test"
"#;

#[tokio::test]
async fn forward_confirmed_reverse_dns_and_the_helo_name() {
    let farm = farm(&format!(
        "name = \"fcrdns\"\n{CHECKS}\n[dns]\nrecords = [\"mail.sender.test A 127.0.0.1\", \"elsewhere.sender.test A 192.0.2.9\"]\n"
    ))
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    let ehlo = c.ehlo("mail.sender.test").await;
    assert!(ehlo.text().starts_with("250-"), "{ehlo}");
    c.send("EHLO nowhere.sender.test\r\n").await;
    c.expect("550 5.7.1 <nowhere.sender.test>: Helo command rejected: Host not found")
        .await;
    c.send("EHLO elsewhere.sender.test\r\n").await;
    c.expect("550 5.7.1 <elsewhere.sender.test>: Helo command rejected: does not resolve to your address")
        .await;
    let results: Vec<(String, String)> = checks(&farm)
        .into_iter()
        .map(|(c, _, r, _)| (c, r))
        .collect();
    let expected = [
        ("ptr", "found mail.sender.test"),
        ("fcrdns", "pass"),
        ("helo-dns", "match"),
        ("helo-dns", "missing"),
        ("helo-dns", "mismatch"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect();
    assert_eq!(results, expected);
    farm.shutdown().await;

    // Without the A record, the PTR name does not lead back: FCrDNS fails.
    let farm = farm_without_forward().await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO mail.sender.test\r\n").await;
    c.expect_code(550).await;
    assert!(
        checks(&farm)
            .iter()
            .any(|(c, _, r, _)| c == "fcrdns" && r == "fail")
    );
    farm.shutdown().await;
}

async fn farm_without_forward() -> mxfarm::Farm {
    farm(&format!("name = \"fcrdns\"\n{CHECKS}")).await
}

/// The shipped `dns-trouble` scenario, asked as a sender would: the MX lookup fails for
/// 10 minutes, mx2 has no address, and MAIL waits for a slow SPF lookup that fails.
#[tokio::test]
async fn the_dns_trouble_scenario_plays_what_it_says() {
    use mxfarm::{Farm, FarmOptions};
    let scenario = mxfarm::scenario::load_embedded("dns-trouble").expect("shipped");
    let options = FarmOptions::ephemeral().dns(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let farm = Farm::start_with(scenario, options).await.expect("starts");
    let zone = mxfarm::dns::zone_file(&farm.scenario());
    assert!(
        zone.contains("trouble.test.\t60\tIN\tMX\t10 mx1.trouble.test."),
        "{zone}"
    );
    assert!(
        zone.contains("; dns rule 2: name=mx2.trouble.test type=A|AAAA -> empty"),
        "{zone}"
    );

    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.sender.test").await;
    c.send("MAIL FROM:<me@sender.test>\r\n").await;
    farm.wait_for(|e| matches!(&e.kind, EventKind::DnsQuery { answer: DnsReply::Held, qtype, .. } if qtype == "TXT"))
        .await;
    farm.advance(Duration::from_secs(8));
    c.expect("451 4.7.1 Temporary SPF lookup failure for me@sender.test, try again later")
        .await;
    c.quit().await;
    farm.advance(Duration::from_secs(20 * 60));
    // SPF now finds no record for sender.test (none), and the missing PTR defers.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.sender.test").await;
    c.send("MAIL FROM:<me@sender.test>\r\n").await;
    c.expect("451 4.7.23 127.0.0.1 doesn't have a PTR record; your email has been temporarily rate limited")
        .await;
    farm.shutdown().await;
}

/// The farm's lookups give up after 10 s of farm time, as the rules' delays count: a
/// TXT answer held 30 s makes SPF a temperror when the clock has moved 10 s, whatever
/// real time it took. And with `outside-zones = "refused"`, the farm's own checks of a
/// name outside the zones still find that it does not exist (SPF none, not temperror).
#[tokio::test]
async fn lookups_time_out_on_the_farm_clock_and_outside_names_do_not_exist() {
    let farm = farm(
        r#"
name = "spf-timeout"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "mail"
when = { spf = "temperror" }
then = { reply = "451 4.7.1 SPF temperror" }
[[host.rule]]
stage = "mail"
when = { spf = "none" }
then = { reply = "550 5.7.1 SPF none" }
[dns]
outside-zones = "refused"
records = ["held.test TXT v=spf1 +all"]
[[dns.rule]]
when = { query = "held.test", type = "TXT" }
then = { delay = "30s" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send("MAIL FROM:<a@held.test>\r\n").await;
    farm.wait_for(|e| {
        matches!(
            &e.kind,
            EventKind::DnsQuery {
                answer: DnsReply::Held,
                ..
            }
        )
    })
    .await;
    farm.advance(Duration::from_secs(10));
    c.expect("451 4.7.1 SPF temperror").await;
    // A domain outside every zone: REFUSED for senders, but no such name for the farm.
    c.send("MAIL FROM:<a@elsewhere.example>\r\n").await;
    c.expect("550 5.7.1 SPF none").await;
    let results: Vec<String> = checks(&farm).into_iter().map(|(_, _, r, _)| r).collect();
    assert_eq!(results, ["temperror", "none"]);
    farm.shutdown().await;
}

/// `mxfarm dns` prints a long TXT record as strings of 255 bytes; pasted back into
/// `[dns] records`, it is the same record.
#[tokio::test]
async fn a_long_txt_record_printed_by_mxfarm_dns_reads_back() {
    let long = format!("v=spf1 {} -all", "ip4:192.0.2.1 ".repeat(30).trim());
    let text = format!(
        "name = \"txt\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n[dns]\nrecords = [\"long.test TXT {long}\"]\n"
    );
    let scenario = mxfarm::scenario::load_str("txt.toml", &text).expect("loads");
    let zone = mxfarm::dns::zone_file(&scenario);
    let line = zone
        .lines()
        .find(|l| l.starts_with("long.test.") && l.contains("\tTXT\t"))
        .expect("the record");
    let data = line.split('\t').nth(4).expect("its data");
    let pasted = format!(
        "name = \"txt\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n[dns]\nrecords = ['long.test TXT {data}']\n"
    );
    let again =
        mxfarm::scenario::load_str("pasted.toml", &pasted).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mxfarm::dns::zone_file(&again), zone);
    assert!(data.starts_with('"') && data.contains("\" \""), "{data}");
}
