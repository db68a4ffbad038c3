//! The replies a host sends on its own (not from a rule): positive replies for each stage,
//! protocol errors and limits. Built once per host, since their text depends only on the
//! host's hostname and extensions, so the per-command path does not format strings.

use crate::scenario::{Host, Reply};

/// The most characters of a client's parameter a reply shows: with the reply's own
/// words, well within a line's 512 octets even when each is a 3-octet U+FFFD.
const SHOWN_PARAMETER: usize = 64;

/// Every built-in reply of one host.
#[derive(Debug, Clone)]
pub(crate) struct Replies {
    hostname: String,
    enhanced: bool,
    pub greeting: Reply,
    pub ehlo: Reply,
    pub ehlo_with_starttls: Reply,
    pub ready_to_start_tls: Reply,
    pub tls_already_active: Reply,
    pub tls_not_available: Reply,
    pub starttls_syntax: Reply,
    pub pipelined_after_starttls: Reply,
    pub transaction_in_progress: Reply,
    pub helo: Reply,
    pub mail_ok: Reply,
    pub rcpt_ok: Reply,
    pub data_go_ahead: Reply,
    pub rset_ok: Reply,
    pub noop_ok: Reply,
    pub vrfy: Reply,
    pub help: Reply,
    pub bye: Reply,
    pub too_many_connections: Reply,
    pub shutting_down: Reply,
    pub timeout: Reply,
    pub too_many_errors: Reply,
    pub no_service: Reply,
    pub line_too_long: Reply,
    pub bare_lf_in_command: Reply,
    pub bare_lf_in_content: Reply,
    pub unrecognized: Reply,
    pub not_implemented: Reply,
    pub need_helo: Reply,
    pub need_mail: Reply,
    pub need_rcpt: Reply,
    pub nested_mail: Reply,
    pub no_valid_recipients: Reply,
    pub too_many_recipients: Reply,
    pub message_too_big: Reply,
    pub insufficient_storage: Reply,
    pub size_exceeds_limit: Reply,
    pub bad_sender: Reply,
    pub bad_recipient: Reply,
    pub data_after_bdat: Reply,
    pub journal_unwritable: Reply,
}

impl Replies {
    pub(crate) fn for_host(host: &Host) -> Self {
        let hostname = &host.hostname;
        let enhanced = host.extensions.enhanced_status_codes;
        // RFC 2034: enhanced codes only once the extension is advertised; a host with it
        // switched off plays an old server.
        let r = |code: u16, status: &str, text: &str| {
            Reply::new(code, enhanced.then_some(status), text)
        };
        Self {
            hostname: hostname.clone(),
            enhanced,
            greeting: Reply::new(220, None, format!("{hostname} {}", host.greeting)),
            ehlo: ehlo_reply(host, false),
            ehlo_with_starttls: ehlo_reply(host, true),
            ready_to_start_tls: r(220, "2.0.0", "Ready to start TLS"),
            tls_already_active: r(554, "5.5.1", "Error: TLS already active"),
            tls_not_available: r(454, "4.7.0", "TLS not available due to temporary reason"),
            starttls_syntax: r(501, "5.5.4", "Syntax: STARTTLS"),
            transaction_in_progress: r(503, "5.5.1", "Error: MAIL transaction in progress"),
            pipelined_after_starttls: r(
                554,
                "5.5.1",
                "Error: commands pipelined after STARTTLS are refused",
            ),
            helo: Reply::new(250, None, hostname.clone()),
            mail_ok: r(250, "2.1.0", "Ok"),
            rcpt_ok: r(250, "2.1.5", "Ok"),
            data_go_ahead: Reply::new(354, None, "End data with <CR><LF>.<CR><LF>"),
            rset_ok: r(250, "2.0.0", "Ok"),
            noop_ok: r(250, "2.0.0", "Ok"),
            vrfy: r(252, "2.0.0", "Cannot VRFY user, but will accept message"),
            help: r(214, "2.0.0", "See RFC 5321"),
            bye: r(221, "2.0.0", "Bye"),
            too_many_connections: r(
                421,
                "4.3.2",
                &format!("{hostname} Too many connections, try again later"),
            ),
            shutting_down: r(421, "4.3.2", &format!("{hostname} Service shutting down")),
            timeout: r(421, "4.4.2", &format!("{hostname} Error: timeout exceeded")),
            too_many_errors: r(421, "4.7.0", &format!("{hostname} Error: too many errors")),
            no_service: r(503, "5.5.1", "Error: no service here, only QUIT"),
            line_too_long: r(500, "5.5.2", "Error: line too long"),
            // Postfix's words with smtpd_forbid_bare_newline = reject. In a command the
            // farm closes, so the code is 521 (RFC 7504: no mail here, closing), as
            // Postfix's smtpd_forbid_bare_newline_reject_code = 521 would answer; in
            // content the message is refused and the session goes on, hence 550.
            bare_lf_in_command: r(
                521,
                "5.5.2",
                &format!("{hostname} Error: bare <LF> received"),
            ),
            bare_lf_in_content: r(
                550,
                "5.5.2",
                &format!("{hostname} Error: bare <LF> received"),
            ),
            unrecognized: r(500, "5.5.1", "Error: command not recognized"),
            not_implemented: r(502, "5.5.1", "Error: command not implemented"),
            need_helo: r(503, "5.5.1", "Error: send HELO/EHLO first"),
            need_mail: r(503, "5.5.1", "Error: need MAIL command"),
            need_rcpt: r(503, "5.5.1", "Error: need RCPT command"),
            nested_mail: r(503, "5.5.1", "Error: nested MAIL command"),
            no_valid_recipients: r(554, "5.5.1", "Error: no valid recipients"),
            too_many_recipients: r(452, "4.5.3", "Error: too many recipients"),
            message_too_big: r(552, "5.3.4", "Error: message file too big"),
            // RFC 5321's 452 "insufficient system storage", with RFC 3463's "mail system
            // full": the farm's budget of content in flight is spent for now.
            insufficient_storage: r(452, "4.3.1", "Error: insufficient system storage"),
            size_exceeds_limit: r(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            bad_sender: r(501, "5.1.7", "Bad sender address syntax"),
            bad_recipient: r(501, "5.1.3", "Bad recipient address syntax"),
            data_after_bdat: r(503, "5.5.1", "Error: DATA not allowed after BDAT"),
            // Postfix's words when its queue file cannot be written: the sender keeps the
            // message and tries again, as it should when a receiver cannot record it.
            journal_unwritable: r(
                451,
                "4.3.0",
                "Error: queue file write error (the farm cannot write its journal)",
            ),
        }
    }

    /// The greeting of a connection over the host's `max-connections-per-client`, worded
    /// as Postfix words it (`smtpd_client_connection_count_limit`), since senders know it.
    pub fn too_many_from_client(&self, client: std::net::IpAddr) -> Reply {
        Reply::new(
            421,
            self.enhanced.then_some("4.7.0"),
            format!(
                "{} Error: too many connections from {client}",
                self.hostname
            ),
        )
    }

    /// A reply for a parameter the client used but the host did not advertise. The
    /// parameter is shown cut to [`SHOWN_PARAMETER`] characters: echoed whole, a long
    /// one (or one of invalid UTF-8, each byte of which becomes a 3-octet U+FFFD) made a
    /// reply line longer than RFC 5321's 512 octets (found by the `smtp_session` fuzz
    /// target).
    pub fn unsupported_parameter(&self, enhanced: bool, param: &str) -> Reply {
        let shown = match param.char_indices().nth(SHOWN_PARAMETER) {
            Some((cut, _)) => format!("{}...", &param[..cut]),
            None => param.to_string(),
        };
        Reply::new(
            555,
            enhanced.then_some("5.5.4"),
            format!("Unsupported option: {shown}"),
        )
    }

    /// A reply for a line the parser could not make sense of.
    pub fn syntax_error(&self, enhanced: bool, syntax: &str) -> Reply {
        Reply::new(
            501,
            enhanced.then_some("5.5.4"),
            format!("Syntax: {syntax}"),
        )
    }

    /// The positive reply to the final dot, naming the farm's message number.
    pub fn queued(&self, enhanced: bool, id: u64) -> Reply {
        Reply::new(
            250,
            enhanced.then_some("2.0.0"),
            format!("Ok: queued as {id}"),
        )
    }

    /// The reply to a non-final BDAT chunk.
    pub fn chunk_received(&self, enhanced: bool, size: u64) -> Reply {
        Reply::new(
            250,
            enhanced.then_some("2.0.0"),
            format!("{size} octets received"),
        )
    }
}

/// `250-hostname` followed by one line per advertised extension.
fn ehlo_reply(host: &Host, starttls: bool) -> Reply {
    let ext = &host.extensions;
    let mut lines = vec![host.hostname.clone()];
    let mut add = |on: bool, line: String| {
        if on {
            lines.push(line);
        }
    };
    add(ext.pipelining, "PIPELINING".into());
    add(ext.size, format!("SIZE {}", host.limits.max_message_size));
    add(ext.eight_bit_mime, "8BITMIME".into());
    add(ext.enhanced_status_codes, "ENHANCEDSTATUSCODES".into());
    add(ext.smtputf8, "SMTPUTF8".into());
    add(ext.chunking, "CHUNKING".into());
    add(starttls, "STARTTLS".into());
    Reply {
        code: 250,
        status: None,
        lines,
    }
}
