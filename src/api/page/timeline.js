// mxfarm's timeline, part 3 of 3: one row per delivery (one message to one recipient), each attempt a
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
// format.js (what marks mean, how times are written) and draw.js (rows, marks and the
// details as text) come before this file in /timeline.js.
'use strict';

(function (F, makeDraw) {
  const { API, ROW_H } = makeDraw;
  const OVERSCAN = 10;
  const REFRESH_GAP_MS = 1000;
  const RECONNECT_MS = 3000;
  const { KINDS, STATUS_LABEL, esc, clockText, statusOf, deliveryKey, sortFindings, kindOf } = F;

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
  const D = makeDraw(state, F);

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

  function drawAxis() {
    el.axis.setAttribute('viewBox', `0 0 ${state.width} 34`);
    el.axis.setAttribute('width', state.width);
    el.axis.innerHTML = D.axisSvg();
  }

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
    for (let i = first; i < last; i++) html += D.rowHtml(state.shown[i], i);
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

  function renderDetails() {
    const scroll = el.details.scrollTop;
    if (state.overall) {
      el.details.hidden = false;
      el.detailsBody.innerHTML = `<h2 id="details-title">Report overview</h2>`
        + (state.overallFindings.length ? D.findingList(sortFindings(state.overallFindings)) : '<p class="quiet">No findings yet.</p>');
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
      html = `<h2 id="details-title">Message ${row.message} to ${esc(row.recipient || '(no recipient)')}</h2>` + D.dl([
        ['sender', `<${row.sender}>`],
        ['status', STATUS_LABEL[row.status] || row.status],
        ['attempts', String(row.attempts.length)],
        ['told apart by', info ? (info.message_id ? `Message-ID ${info.message_id}` : info.identified_by) : null],
      ]);
    } else {
      html = `<h2 id="details-title">Contacts from ${esc(row.client)} for no message</h2>`;
    }
    if (a) html += D.attemptSection(a, n);
    html += D.attemptsTable(row, n) + D.findingsSection(row.findings);
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
}(mxfarmFormat, mxfarmDraw));
