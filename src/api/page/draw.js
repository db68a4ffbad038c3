// mxfarm's timeline, part 2 of 3: the rows, marks, axis and details as HTML and SVG
// text, built from the page's state (one string per row: cheap to build for the rows in
// view, and set with one innerHTML). No DOM reads or writes here.
'use strict';

// eslint-disable-next-line no-unused-vars
function mxfarmDraw(state, F) {
  const { KIND_LABEL, STATUS_LABEL, esc, clockText, durText, replyText } = F;
  const { API, ROW_H, PAD } = mxfarmDraw;

  // --- drawing ------------------------------------------------------------------------

  function x(ms) {
    const span = state.t1 - state.t0 || 1;
    return PAD + ((ms - state.t0) / span) * (state.width - 2 * PAD);
  }

  const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
    3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

  /** The axis: ticks, clock jumps and now, as SVG. */
  function axisSvg() {
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
    return svg;
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

  return { x, axisSvg, rowHtml, dl, findingList, findingsSection, attemptSection, attemptsTable };
}

mxfarmDraw.API = '/api/v1';
mxfarmDraw.ROW_H = 30;
mxfarmDraw.PAD = 12;
