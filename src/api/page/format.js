// mxfarm's timeline, part 1 of 3 (served as one script, /timeline.js, with draw.js and
// timeline.js after it): what the marks mean and how times, durations and replies are
// written. Pure functions, no DOM.
'use strict';

// eslint-disable-next-line no-unused-vars
const mxfarmFormat = (function () {

  // The kinds of marks, in the legend's order. `data-kind` carries these names.
  const KINDS = [
    ['accepted', 'accepted', 'the farm took the message (2xx after the data)'],
    ['deferred', 'deferred', 'a 4xx reply: the sender should retry later'],
    ['refused', 'refused', 'a 5xx reply: the sender should bounce, not retry'],
    ['lost-reply', 'lost reply', 'the farm kept the message, but its reply never reached the sender'],
    ['connection-failure', 'connection failure', 'the connection failed, was lost or closed without a reply (TCP, greeting, TLS, a wait the sender gave up on)'],
    ['abandoned', 'abandoned', 'the sender reset or quit the transaction on its own'],
    ['open', 'open', 'still going on'],
  ];
  const KIND_LABEL = Object.fromEntries(KINDS.map(([k, l]) => [k, l]));

  const STATUS_LABEL = {
    delivered: 'delivered',
    duplicated: 'duplicated',
    'still-deferred': 'not yet',
    bounced: 'refused',
    abandoned: 'abandoned',
    'in-progress': 'in progress',
    'no-message': 'no message',
  };

  const SEVERITY_RANK = { problem: 0, warning: 1, info: 2, ok: 3 };

  // --- formatting -------------------------------------------------------------------

  function esc(text) {
    return String(text)
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&#39;');
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  /** Farm time as `[Dd ]HH:MM:SS[.mmm]`. */
  function clockText(ms, withMillis) {
    const total = Math.max(0, Math.floor(ms));
    let s = Math.floor(total / 1000);
    const days = Math.floor(s / 86400);
    s %= 86400;
    const text = `${pad2(Math.floor(s / 3600))}:${pad2(Math.floor((s % 3600) / 60))}:${pad2(s % 60)}`
      + (withMillis ? `.${String(total % 1000).padStart(3, '0')}` : '');
    return days ? `${days}d ${text}` : text;
  }

  /** A duration as `1h 5m 3s`, or milliseconds when under a second. */
  function durText(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    let s = Math.round(ms / 1000);
    const parts = [];
    for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]]) {
      if (s >= size) {
        parts.push(`${Math.floor(s / size)}${unit}`);
        s %= size;
      }
    }
    if (s || !parts.length) parts.push(`${s}s`);
    return parts.join(' ');
  }

  function replyText(reply) {
    if (!reply) return '';
    const head = reply.status ? `${reply.code} ${reply.status}` : String(reply.code);
    return reply.lines && reply.lines.length
      ? reply.lines.map((line) => `${head} ${line}`).join('\n')
      : head;
  }

  // --- the data -----------------------------------------------------------------------

  /** The mark of an attempt, from how it ended and whether a reply ended it. */
  function kindOf(a) {
    switch (a.outcome) {
      case 'delivered': return a.reply ? 'accepted' : 'lost-reply';
      case 'deferred': return a.reply ? 'deferred' : 'connection-failure';
      case 'rejected': return 'refused';
      case 'unreached':
        if (!a.reply) return 'connection-failure';
        return a.reply.code >= 500 ? 'refused' : 'deferred';
      case 'abandoned': return 'abandoned';
      default: return 'open';
    }
  }

  /** How a delivery stands when the report does not say yet (as the transcript tells it). */
  function statusOf(attempts) {
    const delivered = attempts.filter((a) => a.outcome === 'delivered').length;
    if (delivered > 1) return 'duplicated';
    if (delivered === 1) return 'delivered';
    const last = attempts[attempts.length - 1];
    if (!last) return 'still-deferred';
    if (last.outcome === 'rejected') return 'bounced';
    if (last.outcome === 'abandoned') return 'abandoned';
    if (last.outcome === 'open') return 'in-progress';
    return 'still-deferred';
  }

  function deliveryKey(message, recipient) {
    return `m:${message}:${recipient == null ? '' : recipient}`;
  }

  function sortFindings(findings) {
    return findings.slice().sort((a, b) => (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9));
  }

  return {
    KINDS, KIND_LABEL, STATUS_LABEL, SEVERITY_RANK,
    esc, clockText, durText, replyText, kindOf, statusOf, deliveryKey, sortFindings,
  };
}());
