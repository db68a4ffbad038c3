//! Inputs the fuzz targets of `fuzz/` crashed on, each a test of the promise it broke, so
//! that a fix stays fixed without nightly or cargo-fuzz (`scripts/fuzz.sh` runs those).
//! Each input is cut down to what the crash needs; the fuzz seeds keep it too.

use std::path::Path;

use mxfarm::journal::file::parse;
use mxfarm::render::{self, Granularity};
use mxfarm::report::report_journal;
use mxfarm::transcript::Transcript;

/// Every view in every form, as the `journal_file` and `views` targets call them.
fn all_views(text: &str) {
    let events = parse(Path::new("fuzz.jsonl"), text).unwrap().events;
    let transcript = Transcript::from_events(&events);
    for granularity in [
        Granularity::Exact,
        Granularity::Seconds,
        Granularity::Minutes,
        Granularity::None,
    ] {
        transcript.render(granularity);
        render::journal(&events, granularity);
    }
    transcript.to_json();
    let report = report_journal(&events);
    report.render();
    report.to_json();
}

/// A transaction whose events are numbered backwards (its MAIL before its connection's
/// opening), offered after another of the same envelope: working out whether the two
/// were offered at once sliced the spans from after where they end, and every view
/// panicked (`slice index starts at 1 but ends at 0`). Found by `journal_file` and
/// `views` within seconds; a file edited by hand or pieced together can hold this.
#[test]
fn a_transaction_numbered_backwards_does_not_panic_the_views() {
    all_views(
        r#"{"seq":1,"ms":0,"event":"farm-started","scenario":"t","domains":[]}
{"seq":9,"ms":0,"event":"connection-opened","host":"mx1","conn":2,"client":"192.0.2.1:1"}
{"seq":9,"ms":0,"event":"command","host":"mx1","conn":2,"line":"MAIL","verb":"MAIL","sender":"a@x.test"}
{"seq":9,"ms":0,"event":"command","host":"mx1","conn":2,"line":"RCPT","verb":"RCPT","recipient":"b@y.test"}
{"seq":9,"ms":0,"event":"connection-closed","host":"mx1","conn":2,"by":"client","reason":"QUIT"}
{"seq":10,"ms":1000,"event":"connection-opened","host":"mx1","conn":1,"client":"192.0.2.1:2"}
{"seq":3,"ms":1000,"event":"command","host":"mx1","conn":1,"line":"MAIL","verb":"MAIL","sender":"a@x.test"}
{"seq":4,"ms":1000,"event":"command","host":"mx1","conn":1,"line":"RCPT","verb":"RCPT","recipient":"b@y.test"}
{"seq":5,"ms":1000,"event":"connection-closed","host":"mx1","conn":1,"by":"client","reason":"QUIT"}
"#,
    );
}

/// A MAIL parameter the host does not know, long and of invalid UTF-8: the 555 echoed
/// it whole, each invalid byte as a 3-octet U+FFFD, in a reply line of 543 octets, over
/// RFC 5321's 512 (found by `smtp_session` in CI's 40 s). The reply now shows 64
/// characters of it; every line the farm writes stays within 512 octets.
#[tokio::test]
async fn an_unknown_parameter_is_echoed_within_a_reply_line() {
    use mxfarm::testing::SmtpClient;
    let farm = crate::support::farm(crate::support::PLAIN).await;
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.greeting().await;
    c.ehlo("client.test").await;
    let mut line = b"MAIL FROM:<a@sender.test> X".to_vec();
    line.extend(std::iter::repeat_n(0xff, 200));
    line.extend_from_slice(b"\r\n");
    c.send(&line).await;
    let reply = c.expect_code(555).await;
    assert!(
        reply.text().len() <= 510,
        "{} octets: {}",
        reply.text().len(),
        reply.text()
    );
    assert!(reply.text().ends_with("..."), "{}", reply.text());
    c.quit().await;
    farm.shutdown().await;
}
