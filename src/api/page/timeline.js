// mxfarm's timeline: one row per delivery (one message to one recipient), each attempt a
// mark on one time axis of farm time, the report's findings beside it, live from the
// journal's event stream. Vanilla JS, no build step, nothing fetched but this farm's API.
//
// Why it is built this way:
// - Rows have a fixed height and only those in view are in the DOM (plus a margin), so
//   10,000 deliveries cost what 40 do; a live update re-fetches the views and redraws the
//   rows in view, never all of them.
// - The events only say *that* something happened: the page re-fetches /deliveries and
//   /report (at most once a second), since the farm derives both from the journal and
//   the page should show exactly what the API says, not a second derivation of it.
// - The page only reads (GET): changes need the token header, which it never sends.
'use strict';

(function () {
  const API = '/api/v1';
  const ROW_H = 30;
  const OVERSCAN = 10;
  const REFRESH_GAP_MS = 1000;
  const RECONNECT_MS = 3000;
  const PAD = 12;

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

  const $ = (id) => document.getElementById(id);
  const el = {
    scenario: $('scenario'), clock: $('clock'), counts: $('counts'), live: $('live'),
    recipient: $('f-recipient'), host: $('f-host'), outcome: $('f-outcome'), zoom: $('f-zoom'),
    filters: $('filters'), overall: $('overall'), shown: $('shown'), legend: $('legend'),
    axisBox: $('axis-box'), axis: $('axis'), scroller: $('scroller'), spacer: $('spacer'),
    rows: $('rows'), empty: $('empty'), details: $('details'), detailsBody: $('details-body'),
    detailsClose: $('details-close'), tip: $('tip'), error: $('error'),
  };

  const state = {
    rows: [],
    byKey: new Map(),
    shown: [],
    messages: [],
    hosts: [],
    hostAddrs: [],
    overallFindings: [],
    incomplete: null,
    full: { t0: 0, t1: 60000 },
    t0: 0,
    t1: 60000,
    width: 600,
    clock: { ms: 0, at: performance.now() },
    jumps: [],
    lastSeq: 0,
    dropped: 0,
    selected: null, // { key, attempt } with attempt 1-based, 0 for none
    overall: false,
    restOpen: false,
    active: 0,
    loaded: false,
  };

  // Read by the end-to-end test and the bench: when the first rows were drawn, and what
  // the last refresh cost.
  const stats = {
    firstRender: null,
    refreshes: 0,
    renders: 0,
    lastRender: 0,
    last: null,
    events: 0,
    pending: true,
  };
  window.mxfarmTimeline = stats;

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

  function makeRow(base, attempts, report, hosts, range) {
    const kinds = new Set();
    const rowHosts = new Set();
    for (const a of attempts) {
      a.kind = kindOf(a);
      kinds.add(a.kind);
      rowHosts.add(a.host);
      hosts.add(a.host);
      if (a.start_ms < range.min) range.min = a.start_ms;
      const end = Math.max(a.ms, a.clears_at_ms || 0);
      if (end > range.max) range.max = end;
    }
    const findings = report ? sortFindings(report.findings || []) : null;
    return Object.assign(base, {
      attempts,
      kinds,
      hosts: rowHosts,
      report,
      findings,
      problem: !!findings && findings.some((f) => f.severity === 'problem'),
    });
  }

  /** Rows from the deliveries and the report, with what filters and marks need. */
  function prepare(deliveries, report) {
    const reports = new Map();
    for (const r of (report && report.deliveries) || []) {
      reports.set(deliveryKey(r.message, r.recipient), r);
    }
    const clients = new Map();
    for (const c of (report && report.clients) || []) clients.set(c.client, c);
    const hosts = new Set();
    const range = { min: Infinity, max: -Infinity };
    const rows = [];
    const byKey = new Map();
    for (const d of deliveries.list || []) {
      const key = deliveryKey(d.message, d.recipient);
      const r = reports.get(key) || null;
      const row = makeRow({
        key,
        message: d.message,
        sender: d.sender,
        recipient: d.recipient,
        search: (d.recipient || '').toLowerCase(),
        status: (r && r.outcome && r.outcome.result) || statusOf(d.attempts),
      }, d.attempts, r, hosts, range);
      rows.push(row);
      byKey.set(key, row);
    }
    for (const c of deliveries.unattributed || []) {
      const key = `c:${c.client}`;
      const row = makeRow({
        key,
        message: null,
        client: c.client,
        recipient: null,
        search: null,
        status: 'no-message',
      }, c.attempts, clients.get(c.client) || null, hosts, range);
      rows.push(row);
      byKey.set(key, row);
    }
    state.rows = rows;
    state.byKey = byKey;
    state.messages = deliveries.messages || [];
    state.incomplete = deliveries.incomplete || (report && report.incomplete) || null;
    state.overallFindings = (report && report.overall) || [];
    state.hosts = Array.from(hosts).sort();
    const now = state.clock.ms;
    for (const j of state.jumps) {
      if (j.at > range.max && j.at <= now) range.max = j.at;
    }
    if (range.min === Infinity) {
      state.full = { t0: 0, t1: Math.max(now, 60000) };
    } else {
      const hi = Math.max(range.max, now);
      const span = Math.max(hi - range.min, 1000);
      state.full = { t0: Math.max(0, range.min - span * 0.02), t1: hi + span * 0.02 };
    }
    applyZoom();
  }

  /** The axis's range: the whole run, its last stretch, or the selected delivery's. */
  function applyZoom() {
    const zoom = el.zoom.value;
    const { t0, t1 } = state.full;
    const row = state.selected && state.byKey.get(state.selected.key);
    if (zoom === 'selected' && row && row.attempts.length) {
      let lo = Infinity;
      let hi = -Infinity;
      for (const a of row.attempts) {
        lo = Math.min(lo, a.start_ms);
        hi = Math.max(hi, a.ms, a.clears_at_ms || 0);
      }
      const span = Math.max(hi - lo, 20);
      state.t0 = Math.max(0, lo - span * 0.05);
      state.t1 = hi + span * 0.05;
    } else if (zoom && zoom !== 'selected') {
      state.t1 = t1;
      state.t0 = Math.max(t0, t1 - Number(zoom));
    } else {
      state.t0 = t0;
      state.t1 = t1;
    }
  }

  // --- filters ------------------------------------------------------------------------

  function matches(row, text, host, outcome) {
    if (text && !(row.search !== null && row.search.includes(text))) return false;
    if (host && !row.hosts.has(host)) return false;
    if (!outcome) return true;
    if (outcome.startsWith('kind:')) return row.kinds.has(outcome.slice(5));
    if (outcome === 'problem') return row.problem;
    return row.status === outcome;
  }

  function applyFilters() {
    const text = el.recipient.value.trim().toLowerCase();
    const host = el.host.value;
    const outcome = el.outcome.value;
    state.shown = text || host || outcome
      ? state.rows.filter((row) => matches(row, text, host, outcome))
      : state.rows;
    if (state.active >= state.shown.length) state.active = Math.max(0, state.shown.length - 1);
  }

  function updateHostOptions() {
    const names = Array.from(new Set(state.hostAddrs.map((h) => h.name).concat(state.hosts))).sort();
    const have = Array.from(el.host.options).slice(1).map((o) => o.value);
    if (have.join('\n') === names.join('\n')) return;
    const current = el.host.value;
    el.host.length = 1;
    for (const name of names) el.host.add(new Option(name, name));
    if (current && !names.includes(current)) el.host.add(new Option(`${current} (gone)`, current));
    el.host.value = current;
  }

  // --- drawing ------------------------------------------------------------------------

  function x(ms) {
    const span = state.t1 - state.t0 || 1;
    return PAD + ((ms - state.t0) / span) * (state.width - 2 * PAD);
  }

  const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
    3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

  function drawAxis() {
    const w = state.width;
    const span = state.t1 - state.t0;
    const most = Math.max(2, Math.floor(w / 95));
    const step = STEPS.find((s) => span / s <= most) || STEPS[STEPS.length - 1];
    let svg = '';
    for (const j of state.jumps) {
      if (j.at < state.t0 || j.at - j.by > state.t1) continue;
      const x0 = x(Math.max(j.at - j.by, state.t0));
      const x1 = x(j.at);
      svg += `<g class="jump-mark"><title>farm clock advanced by ${esc(durText(j.by))} by hand, to ${esc(clockText(j.at, true))}</title>`
        + `<rect class="jump-band" x="${x0.toFixed(1)}" y="18" width="${Math.max(2, x1 - x0).toFixed(1)}" height="16"/>`
        + `<line class="jump" x1="${x1.toFixed(1)}" x2="${x1.toFixed(1)}" y1="14" y2="34"/></g>`;
    }
    for (let t = Math.ceil(state.t0 / step) * step; t <= state.t1; t += step) {
      const px = x(t);
      const at = px.toFixed(1);
      // Labels near an edge lean inwards, so none is cut off.
      const anchor = px < 40 ? 'start' : px > w - 40 ? 'end' : 'middle';
      svg += `<line class="tick" x1="${at}" x2="${at}" y1="24" y2="34"/>`
        + `<text x="${at}" y="16" text-anchor="${anchor}">${esc(clockText(t, step < 1000))}</text>`;
    }
    const now = state.clock.ms;
    if (now >= state.t0 && now <= state.t1) {
      const at = x(now).toFixed(1);
      svg += `<line class="now" x1="${at}" x2="${at}" y1="20" y2="34"><title>now: ${esc(clockText(now, true))}</title></line>`;
    }
    el.axis.setAttribute('viewBox', `0 0 ${w} 34`);
    el.axis.setAttribute('width', w);
    el.axis.innerHTML = svg;
  }

  function attemptTitle(a, n) {
    const lines = [`attempt ${n}: ${KIND_LABEL[a.kind]} on ${a.host} (connection ${a.conn}, ${a.stage})`];
    if (a.reply) lines.push(replyText(a.reply));
    else if (a.closed) lines.push(`no reply: ${a.closed}`);
    lines.push(`${clockText(a.start_ms, true)} to ${clockText(a.ms, true)}`);
    if (a.clears_at_ms != null) lines.push(`a retry passes from ${clockText(a.clears_at_ms, true)}`);
    return lines.join('\n');
  }

  function marksSvg(row, selectedAttempt) {
    const mid = ROW_H / 2;
    let svg = `<line class="base" x1="0" x2="${state.width}" y1="${mid}" y2="${mid}"/>`;
    for (const j of state.jumps) {
      if (j.at < state.t0 || j.at > state.t1) continue;
      const at = x(j.at).toFixed(1);
      svg += `<line class="jump" x1="${at}" x2="${at}" y1="0" y2="${ROW_H}"/>`;
    }
    const attempts = row.attempts;
    const w = state.width;
    const clamp = (v) => Math.max(-2, Math.min(w + 2, v));
    for (const a of attempts) {
      if (a.clears_at_ms == null || a.clears_at_ms <= a.ms) continue;
      if (a.clears_at_ms < state.t0 || a.ms > state.t1) continue;
      const x0 = clamp(x(a.ms));
      const x1 = clamp(x(a.clears_at_ms));
      svg += `<rect class="wait" x="${x0.toFixed(1)}" y="5" width="${Math.max(1, x1 - x0).toFixed(1)}" height="${ROW_H - 10}">`
        + `<title>deferred until ${esc(clockText(a.clears_at_ms, true))}: a retry before then is refused again</title></rect>`
        + `<line class="wait-edge" x1="${x1.toFixed(1)}" x2="${x1.toFixed(1)}" y1="5" y2="${ROW_H - 5}"/>`;
    }
    let marks = '';
    for (let i = 0; i < attempts.length; i++) {
      const a = attempts[i];
      if (a.ms < state.t0 - (state.t1 - state.t0) * 0.05 || a.start_ms > state.t1) continue;
      const x0 = clamp(x(a.start_ms));
      const x1 = x(a.ms);
      if (x1 - x0 >= 2) {
        svg += `<line class="span" x1="${x0.toFixed(1)}" x2="${x1.toFixed(1)}" y1="${mid}" y2="${mid}"/>`;
      }
      const n = i + 1;
      marks += `<g class="mark k-${a.kind}${n === selectedAttempt ? ' selected' : ''}" data-attempt="${n}" data-kind="${a.kind}" transform="translate(${x1.toFixed(1)},${mid})">`
        + `<title>${esc(attemptTitle(a, n))}</title><circle class="ring" r="10"/>`
        + `<use href="#shape-${a.kind}" x="-8" y="-8" width="16" height="16"/></g>`;
    }
    return svg + marks;
  }

  function findingsCell(row) {
    const f = row.findings;
    if (!f) return '<span class="quiet">no findings yet</span>';
    const loud = f.filter((x) => x.severity === 'problem' || x.severity === 'warning');
    if (loud.length) {
      const first = loud[0];
      const all = loud.map((x) => `${x.severity}: ${x.text}`).join('\n');
      return `<span class="sev ${first.severity}">${first.severity === 'problem' ? 'PROBLEM' : 'WARNING'}</span>`
        + `<span class="text" title="${esc(all)}">${esc(first.text)}</span>`
        + (loud.length > 1 ? `<span class="more">+${loud.length - 1}</span>` : '');
    }
    const info = f.filter((x) => x.severity === 'info');
    const ok = f.length - info.length;
    const parts = [];
    if (ok) parts.push(`${ok} check${ok === 1 ? '' : 's'} passed`);
    if (info.length) parts.push(`${info.length} note${info.length === 1 ? '' : 's'}`);
    const all = f.map((x) => `${x.severity}: ${x.text}`).join('\n');
    return `<span class="sev ${info.length ? 'info' : 'ok'}">${info.length ? 'INFO' : 'OK'}</span>`
      + `<span class="text quiet" title="${esc(all)}">${esc(parts.join(', ') || 'nothing to check yet')}</span>`;
  }

  function rowHtml(row, i) {
    const selected = state.selected && state.selected.key === row.key;
    const hooks = row.message != null
      ? `data-delivery="${row.message}" data-recipient="${esc(row.recipient || '')}"`
      : `data-client="${esc(row.client)}"`;
    const who = row.message != null
      ? `<span class="num">#${row.message}</span><span class="rcpt" title="${esc(`from <${row.sender}> to <${row.recipient || '?'}>`)}">${esc(row.recipient || '(no recipient named)')}</span>`
      : `<span class="num">${esc(row.client)}</span><span class="rcpt quiet">contacts for no message</span>`;
    const label = row.message != null
      ? `message ${row.message} to ${row.recipient || 'no recipient'}, ${STATUS_LABEL[row.status] || row.status}, ${row.attempts.length} attempts`
      : `contacts from ${row.client} for no message, ${row.attempts.length} attempts`;
    return `<div class="row${selected ? ' selected' : ''}" role="listitem" tabindex="${i === state.active ? 0 : -1}" `
      + `data-index="${i}" data-key="${esc(row.key)}" ${hooks} aria-label="${esc(label)}" style="top:${i * ROW_H}px">`
      + `<div class="who">${who}<span class="status ${row.status}">${esc(STATUS_LABEL[row.status] || row.status)}</span></div>`
      + `<svg class="marks" width="${state.width}" height="${ROW_H}" viewBox="0 0 ${state.width} ${ROW_H}">`
      + `${marksSvg(row, selected ? state.selected.attempt : 0)}</svg>`
      + `<div class="findings">${findingsCell(row)}</div></div>`;
  }

  /** Draws the rows in view, and only those. */
  function renderRows() {
    const started = performance.now();
    const n = state.shown.length;
    el.spacer.style.height = `${n * ROW_H}px`;
    const top = el.scroller.scrollTop;
    const height = el.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const firstVisible = Math.min(n - 1, Math.floor(top / ROW_H));
    const lastVisible = Math.max(0, Math.ceil((top + height) / ROW_H) - 1);
    if (n && (state.active < firstVisible || state.active > lastVisible)) state.active = Math.max(0, firstVisible);
    const focused = el.rows.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    let html = '';
    for (let i = first; i < last; i++) html += rowHtml(state.shown[i], i);
    el.rows.innerHTML = html;
    if (focused) {
      const again = Array.from(el.rows.children).find((r) => r.dataset.key === focused);
      if (again) again.focus({ preventScroll: true });
    }
    if (!state.rows.length) {
      el.empty.hidden = false;
      const where = state.hostAddrs.map((h) => `${h.name} on ${h.addr}`).join(', ');
      el.empty.textContent = state.loaded
        ? `No deliveries yet. Send mail to the farm${where ? ` (${where})` : ''}: each message to each recipient becomes a row here.`
        : 'Loading…';
    } else if (!n) {
      el.empty.hidden = false;
      el.empty.textContent = 'No delivery matches the filters.';
    } else {
      el.empty.hidden = true;
    }
    el.shown.textContent = `${n} of ${state.rows.length} rows shown`;
    stats.renders += 1;
    stats.lastRender = performance.now() - started;
  }

  function renderHeader() {
    let delivered = 0;
    let waiting = 0;
    let bounced = 0;
    let abandoned = 0;
    let attempts = 0;
    let problems = 0;
    let deliveries = 0;
    for (const row of state.rows) {
      attempts += row.attempts.length;
      if (row.problem) problems += 1;
      if (row.message == null) continue;
      deliveries += 1;
      if (row.status === 'delivered' || row.status === 'duplicated') delivered += 1;
      else if (row.status === 'bounced') bounced += 1;
      else if (row.status === 'abandoned') abandoned += 1;
      else waiting += 1;
    }
    el.counts.textContent = `${deliveries} (${delivered} delivered, ${waiting} not yet, ${bounced} refused`
      + `${abandoned ? `, ${abandoned} abandoned` : ''}) · ${attempts} attempts · ${problems} with problems`
      + (state.incomplete ? ' · the journal dropped events: some attempts may be missing' : '');
  }

  function tickClock() {
    el.clock.textContent = clockText(state.clock.ms + (performance.now() - state.clock.at), false);
  }

  function render() {
    drawAxis();
    renderRows();
  }

  // --- details ------------------------------------------------------------------------

  function dl(pairs) {
    return `<dl>${pairs.filter(([, v]) => v != null && v !== '').map(([k, v, cls]) => `<dt>${esc(k)}</dt><dd${cls ? ` class="${cls}"` : ''}>${esc(v)}</dd>`).join('')}</dl>`;
  }

  function findingList(findings) {
    return `<ul class="found">${findings.map((f) => `<li><span class="sev ${esc(f.severity)}">${esc(f.severity)}</span><span>${esc(f.text)}${f.attempts && f.attempts.length ? ` <span class="quiet">(attempts ${f.attempts.join(', ')})</span>` : ''}</span></li>`).join('')}</ul>`;
  }

  function findingsSection(findings) {
    if (!findings) return '<h3>Findings</h3><p class="quiet">The report has none for this row yet.</p>';
    const loud = findings.filter((f) => f.severity === 'problem' || f.severity === 'warning');
    const rest = findings.filter((f) => !(f.severity === 'problem' || f.severity === 'warning'));
    let html = `<h3>Findings</h3>${loud.length ? findingList(loud) : '<p class="quiet">No problems.</p>'}`;
    if (rest.length) {
      html += `<details id="rest"${state.restOpen ? ' open' : ''}><summary>${rest.length} more (ok and info)</summary>${findingList(rest)}</details>`;
    }
    return html;
  }

  function attemptSection(a, n) {
    return `<h3>Attempt ${n}: ${esc(KIND_LABEL[a.kind])}</h3>` + dl([
      ['host', a.host],
      ['connection', `${a.conn}${a.transaction ? `, transaction ${a.transaction}` : ', before any MAIL'}`],
      ['client', a.client],
      ['stage', a.stage],
      ['outcome', a.outcome],
      ['reply', a.reply ? replyText(a.reply) : 'none', 'reply'],
      ['closed', a.closed],
      ['started', clockText(a.start_ms, true)],
      ['ended', `${clockText(a.ms, true)} (${durText(a.ms - a.start_ms)})`],
      ['retry after', a.retry_after_ms != null ? `${durText(a.retry_after_ms)}${a.retry_after_told ? ' (the reply said so)' : ''}` : null],
      ['clears at', a.clears_at_ms != null ? clockText(a.clears_at_ms, true) : null],
      ['recipients', a.carried && a.carried.length ? a.carried.join(', ') : null],
      ['kept as', a.kept != null ? `message ${a.kept} (GET ${API}/messages/${a.kept})` : null],
      ['Message-ID', a.message_id],
      ['could also be', a.also_possible && a.also_possible.length ? `messages ${a.also_possible.join(', ')}` : null],
    ]);
  }

  function attemptsTable(row, current) {
    const body = row.attempts.map((a, i) => `<tr class="pick${i + 1 === current ? ' current' : ''}" data-pick="${i + 1}" tabindex="0">`
      + `<td>${i + 1}</td><td><svg class="k-${a.kind}" width="12" height="12" aria-hidden="true"><use href="#shape-${a.kind}" width="12" height="12"/></svg> ${esc(KIND_LABEL[a.kind])}</td>`
      + `<td>${esc(a.host)}</td><td>${esc(clockText(a.ms, false))}</td><td>${a.reply ? a.reply.code : '—'}</td></tr>`).join('');
    return `<h3>Attempts</h3><table><thead><tr><th>#</th><th>kind</th><th>host</th><th>ended</th><th>reply</th></tr></thead><tbody>${body}</tbody></table>`;
  }

  function renderDetails() {
    const scroll = el.details.scrollTop;
    if (state.overall) {
      el.details.hidden = false;
      el.detailsBody.innerHTML = `<h2 id="details-title">Report overview</h2>`
        + (state.overallFindings.length ? findingList(sortFindings(state.overallFindings)) : '<p class="quiet">No findings yet.</p>');
      el.details.scrollTop = scroll;
      return;
    }
    if (!state.selected) {
      el.details.hidden = true;
      return;
    }
    const row = state.byKey.get(state.selected.key);
    el.details.hidden = false;
    if (!row) {
      el.detailsBody.innerHTML = '<h2 id="details-title">Gone</h2><p>This row is no longer in the journal (was it reset?).</p>';
      return;
    }
    const n = state.selected.attempt;
    const a = n ? row.attempts[n - 1] : null;
    let html;
    if (row.message != null) {
      const info = state.messages[row.message - 1];
      html = `<h2 id="details-title">Message ${row.message} to ${esc(row.recipient || '(no recipient)')}</h2>` + dl([
        ['sender', `<${row.sender}>`],
        ['status', STATUS_LABEL[row.status] || row.status],
        ['attempts', String(row.attempts.length)],
        ['told apart by', info ? (info.message_id ? `Message-ID ${info.message_id}` : info.identified_by) : null],
      ]);
    } else {
      html = `<h2 id="details-title">Contacts from ${esc(row.client)} for no message</h2>`;
    }
    if (a) html += attemptSection(a, n);
    html += attemptsTable(row, n) + findingsSection(row.findings);
    el.detailsBody.innerHTML = html;
    el.details.scrollTop = scroll;
  }

  function select(key, attempt) {
    state.overall = false;
    state.selected = { key, attempt };
    if (el.zoom.value === 'selected') {
      applyZoom();
      drawAxis();
    }
    renderRows();
    renderDetails();
  }

  function closeDetails() {
    state.selected = null;
    state.overall = false;
    applyZoom();
    drawAxis();
    renderRows();
    renderDetails();
    const row = el.rows.querySelector('.row[tabindex="0"]');
    if (row) row.focus({ preventScroll: true });
  }

  // --- loading ------------------------------------------------------------------------

  async function getJson(path) {
    const response = await fetch(API + path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!response.ok) throw new Error(`GET ${API}${path}: ${response.status} ${response.statusText}`);
    return response.json();
  }

  let timer = null;
  let inflight = false;
  let again = false;
  let lastStart = -Infinity;
  let lastCost = 0;

  /** A refresh soon: one at a time, none lost, at most one a second, and spaced by twice
   * what the last one cost, so that a farm with many deliveries spends at most a third of
   * its time on the page's views while a sender keeps it busy. */
  function schedule() {
    if (inflight) {
      again = true;
      return;
    }
    if (timer !== null) return;
    stats.pending = true;
    const gap = Math.max(REFRESH_GAP_MS, 2 * lastCost);
    timer = setTimeout(refresh, Math.max(0, lastStart + gap - performance.now()));
  }

  async function refresh() {
    timer = null;
    inflight = true;
    again = false;
    lastStart = performance.now();
    try {
      const [deliveries, report, clock, scenario, hosts] = await Promise.all([
        getJson('/deliveries'),
        getJson('/report?format=json'),
        getJson('/clock'),
        getJson('/scenario'),
        getJson('/hosts'),
      ]);
      const fetched = performance.now();
      state.clock = { ms: clock.now_ms, at: performance.now() };
      state.hostAddrs = hosts.hosts || [];
      el.scenario.textContent = scenario.name || '(unnamed)';
      el.scenario.title = scenario.description || '';
      prepare(deliveries, report);
      state.loaded = true;
      updateHostOptions();
      applyFilters();
      render();
      renderHeader();
      renderDetails();
      tickClock();
      el.error.hidden = true;
      const done = performance.now();
      lastCost = done - lastStart;
      stats.refreshes += 1;
      stats.last = { fetchMs: fetched - lastStart, renderMs: done - fetched, rows: state.rows.length, at: done };
      if (stats.firstRender === null && state.rows.length) {
        stats.firstRender = done;
        performance.mark('mxfarm:first-render');
      }
    } catch (error) {
      el.error.hidden = false;
      el.error.textContent = `Could not read the farm: ${error.message}`;
    } finally {
      inflight = false;
      stats.pending = again;
      if (again) schedule();
    }
  }

  // --- live updates -------------------------------------------------------------------

  function setLive(on, text) {
    el.live.className = `live ${on ? 'on' : 'off'}`;
    el.live.textContent = text || (on ? 'live' : 'disconnected');
    el.live.title = state.dropped ? `${state.dropped} events were dropped by the journal before this page read them` : '';
  }

  function onEvent(message) {
    stats.events += 1;
    const seq = Number(message.lastEventId);
    if (seq > state.lastSeq) state.lastSeq = seq;
    const data = message.data;
    // Only two kinds of event matter to the page itself; the rest just mean "refresh".
    if (data.includes('"clock-advanced"') || data.includes('"reset"')) {
      try {
        const event = JSON.parse(data);
        if (event.event === 'clock-advanced') state.jumps.push({ at: event.ms, by: event.by_ms });
        if (event.event === 'reset' && event.journal) state.jumps = [];
      } catch (_) {
        // Not an event of ours; the refresh shows whatever is there.
      }
    }
    schedule();
  }

  function connect() {
    const source = new EventSource(`${API}/events?after=${state.lastSeq}`);
    source.onopen = () => setLive(true);
    source.onmessage = onEvent;
    source.addEventListener('dropped', (message) => {
      try {
        state.dropped += JSON.parse(message.data).dropped || 0;
      } catch (_) {
        // A dropped notice without a count still means: refresh.
      }
      setLive(true);
      schedule();
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (too many subscribers, the farm gone): try again later, from where we were.
        setLive(false, 'disconnected, retrying');
        source.close();
        setTimeout(connect, RECONNECT_MS);
      } else {
        setLive(false, 'disconnected, reconnecting');
      }
    };
  }

  // --- interaction --------------------------------------------------------------------

  function measure() {
    state.width = Math.max(200, Math.floor(el.axisBox.clientWidth || 600));
  }

  function showTip(target, event) {
    const title = target.querySelector('title');
    if (!title) return;
    el.tip.textContent = title.textContent;
    el.tip.hidden = false;
    const left = Math.min(event.clientX + 14, window.innerWidth - el.tip.offsetWidth - 8);
    const top = event.clientY + 18 + el.tip.offsetHeight > window.innerHeight
      ? event.clientY - el.tip.offsetHeight - 10
      : event.clientY + 18;
    el.tip.style.left = `${Math.max(4, left)}px`;
    el.tip.style.top = `${Math.max(4, top)}px`;
  }

  function moveActive(to) {
    const n = state.shown.length;
    if (!n) return;
    state.active = Math.max(0, Math.min(n - 1, to));
    const top = state.active * ROW_H;
    const height = el.scroller.clientHeight;
    if (top < el.scroller.scrollTop) el.scroller.scrollTop = top;
    else if (top + ROW_H > el.scroller.scrollTop + height) el.scroller.scrollTop = top + ROW_H - height;
    renderRows();
    const row = el.rows.querySelector(`.row[data-index="${state.active}"]`);
    if (row) row.focus({ preventScroll: true });
  }

  function onKey(event) {
    const row = event.target.closest && event.target.closest('.row');
    if (!row) return;
    const page = Math.max(1, Math.floor(el.scroller.clientHeight / ROW_H) - 1);
    const i = Number(row.dataset.index);
    const key = row.dataset.key;
    const current = state.selected && state.selected.key === key ? state.selected.attempt : 0;
    const count = (state.byKey.get(key) || { attempts: [] }).attempts.length;
    switch (event.key) {
      case 'ArrowDown': moveActive(i + 1); break;
      case 'ArrowUp': moveActive(i - 1); break;
      case 'PageDown': moveActive(i + page); break;
      case 'PageUp': moveActive(i - page); break;
      case 'Home': moveActive(0); break;
      case 'End': moveActive(state.shown.length - 1); break;
      case 'Enter':
      case ' ': select(key, current || count); break;
      case 'ArrowRight': if (count) select(key, Math.min(count, current + 1)); break;
      case 'ArrowLeft': if (count) select(key, Math.max(1, current - 1)); break;
      default: return;
    }
    event.preventDefault();
  }

  function buildLegend() {
    el.legend.innerHTML = KINDS.map(([kind, label, what]) => `<li title="${esc(what)}"><svg class="k-${kind}" width="16" height="16" aria-hidden="true"><use href="#shape-${kind}" width="16" height="16"/></svg>${esc(label)}</li>`).join('')
      + '<li title="from a deferral to when a retry would pass (greylisting, quotas, rate limits)"><span class="swatch-wait"></span>greylist / quota window</li>'
      + '<li title="the farm\'s clock was moved forward by hand (POST /api/v1/clock/advance)"><span class="swatch-jump"></span>clock advanced</li>';
  }

  function init() {
    buildLegend();
    measure();
    render();
    let frame = 0;
    el.scroller.addEventListener('scroll', () => {
      if (!frame) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          renderRows();
        });
      }
    }, { passive: true });
    window.addEventListener('resize', () => {
      measure();
      render();
    });
    const refilter = () => {
      applyFilters();
      el.scroller.scrollTop = 0;
      state.active = 0;
      renderRows();
    };
    el.recipient.addEventListener('input', refilter);
    el.host.addEventListener('change', refilter);
    el.outcome.addEventListener('change', refilter);
    el.zoom.addEventListener('change', () => {
      applyZoom();
      render();
    });
    el.filters.addEventListener('reset', () => setTimeout(() => {
      applyZoom();
      drawAxis();
      refilter();
    }, 0));
    el.filters.addEventListener('submit', (event) => event.preventDefault());
    el.overall.addEventListener('click', () => {
      state.overall = true;
      state.selected = null;
      renderRows();
      renderDetails();
    });
    el.rows.addEventListener('click', (event) => {
      const row = event.target.closest('.row');
      if (!row) return;
      const mark = event.target.closest('.mark');
      const key = row.dataset.key;
      state.active = Number(row.dataset.index);
      if (mark) select(key, Number(mark.dataset.attempt));
      else select(key, state.selected && state.selected.key === key ? state.selected.attempt : 0);
    });
    el.rows.addEventListener('mouseover', (event) => {
      const mark = event.target.closest('.mark, .wait');
      if (mark) showTip(mark, event);
    });
    el.rows.addEventListener('mouseout', (event) => {
      if (event.target.closest('.mark, .wait')) el.tip.hidden = true;
    });
    el.scroller.addEventListener('keydown', onKey);
    el.detailsClose.addEventListener('click', closeDetails);
    el.detailsBody.addEventListener('click', (event) => {
      const pick = event.target.closest('[data-pick]');
      if (pick && state.selected) select(state.selected.key, Number(pick.dataset.pick));
    });
    el.detailsBody.addEventListener('keydown', (event) => {
      const pick = event.target.closest('[data-pick]');
      if (pick && state.selected && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        select(state.selected.key, Number(pick.dataset.pick));
      }
    });
    el.detailsBody.addEventListener('toggle', (event) => {
      if (event.target.id === 'rest') state.restOpen = event.target.open;
    }, true);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !el.details.hidden) closeDetails();
    });
    setInterval(tickClock, 1000);
    // The first views first, then the stream: its replay of the journal (from the first
    // event, so no clock jump is missed) would compete with them for the farm and the
    // page. Nothing is lost in between: the stream starts at the journal's beginning.
    refresh().then(connect);
  }

  init();
}());
