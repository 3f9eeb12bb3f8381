// Trace: the waterfall with async hops as send → queue-wait bar → process, the critical path
// highlighted, the verdict on top, and span details with links to follow both ways.
// An order's story is shown whole: traces joined by a consumer's link (a new trace per record,
// a batch's process spans) appear inline under the send they link to, collapsible.
// Rows are virtualised (only those on screen exist), so a 5 000-span trace stays responsive.
import { api } from "/ui/api.js";
import { h, clear, formatDuration, serviceColour, serviceChip, tracePath } from "/ui/dom.js";
import { fetchLogs, logsSection, spanLogs } from "/ui/logs.js";

const ROW = 24; // px per row
const OVERSCAN = 12;

// Depth-first, children in start order.  Hostile or broken data must neither hang nor hide
// spans (the same rules as the analysis' Trace model): a span id seen twice is shown once,
// and a parent cycle (or a span that is its own parent) is cut at its earliest span, which
// is shown as a root.
function treeOrder(input, linkedParents = {}) {
  const byStart = (a, b) => a.start_ns - b.start_ns || (a.span_id < b.span_id ? -1 : 1);
  const spans = [];
  const ids = new Set();
  for (const span of input.slice().sort(byStart)) {
    if (ids.has(span.span_id)) continue;
    ids.add(span.span_id);
    spans.push(span);
  }
  const children = new Map();
  for (const span of spans) {
    const p = linkedParents[span.span_id] || span.parent_span_id;
    const parent = p && p !== span.span_id && ids.has(p) ? p : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const reached = new Set();
  const mark = (root) => {
    const stack = [root];
    while (stack.length) {
      const span = stack.pop();
      if (reached.has(span.span_id)) continue;
      reached.add(span.span_id);
      for (const kid of children.get(span.span_id) || []) stack.push(kid);
    }
  };
  const roots = (children.get(null) || []).slice();
  for (const root of roots) mark(root);
  for (const span of spans) if (!reached.has(span.span_id)) { roots.push(span); mark(span); }
  roots.sort(byStart);
  const out = [];
  const seen = new Set();
  for (const root of roots) {
    const stack = [[root, 0]];
    while (stack.length) {
      const [span, depth] = stack.pop();
      if (seen.has(span.span_id)) continue;
      seen.add(span.span_id);
      out.push({ span, depth });
      const kids = children.get(span.span_id) || [];
      for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
    }
  }
  return out;
}

function queueWaitNs(span) {
  // ours, else the Java agent's (the analysis reads the same two)
  const ms = span.attributes["tracebridge.queue_wait_ms"] ?? span.attributes["kafka.record.queue_time_ms"];
  return span.kind === "CONSUMER" && typeof ms === "number" && ms > 0 ? ms * 1e6 : 0;
}

function exceptionOf(span) {
  const event = (span.events || []).find((e) => e.name === "exception");
  if (event) return `${event.attributes["exception.type"] || "error"}: ${event.attributes["exception.message"] || ""}`;
  const status = span.attributes["http.response.status_code"] || span.attributes["http.status_code"];
  return span.status_message || (status ? `HTTP ${status}` : "error");
}

export async function renderTrace(main, traceId, navigate) {
  const [trace, diagnosis, linking, logs] = await Promise.all([
    api(`/api/traces/${encodeURIComponent(traceId)}`),
    api(`/api/traces/${encodeURIComponent(traceId)}/diagnosis`),
    api(`/api/traces/${encodeURIComponent(traceId)}/linked`),
    fetchLogs(traceId),
  ]);
  const linkedTraces = trace.linked_traces || [];
  const linkedParents = trace.linked_parents || {};
  const spans = [...trace.spans, ...linkedTraces.flatMap((t) => t.spans)];
  const allRows = treeOrder(spans, linkedParents);
  const collapsed = new Set(); // spans whose linked trace is folded away
  let rows = allRows;
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const critical = new Set(diagnosis.critical_span_ids);
  const incoming = new Map(); // span id → spans (here or in other traces) that link to it
  const linkers = new Map([...linking.spans, ...spans].map((s) => [s.span_id, s])); // each once
  for (const span of linkers.values()) {
    for (const link of span.links || []) {
      if (!byId.has(link.span_id)) continue;
      if (!incoming.has(link.span_id)) incoming.set(link.span_id, []);
      incoming.get(link.span_id).push(span);
    }
  }
  const t0 = Math.min(...spans.map((s) => Math.min(s.start_ns, s.start_ns - queueWaitNs(s))));
  const t1 = Math.max(...spans.map((s) => s.end_ns));
  const total = Math.max(1, t1 - t0);
  const pct = (ns) => `${((100 * (ns - t0)) / total).toFixed(3)}%`;
  const width = (ns) => `${Math.max(0.15, (100 * ns) / total).toFixed(3)}%`;

  clear(main);
  main.append(h("h1", { class: "trace-title" }, "Trace ", h("code", {}, trace.trace_id)));
  main.append(h("p", { class: "muted summary" },
    `${formatDuration(diagnosis.end_to_end_ns)} end to end (first start to last end, async hops included) · ${spans.length} spans · `,
    diagnosis.services.map(serviceChip)));
  if (linkedTraces.length) {
    main.append(h("p", { class: "muted linked-summary" },
      `${linkedTraces.length} linked trace${linkedTraces.length > 1 ? "s" : ""} shown inline (consumers joined by a link, not a parent): `,
      linkedTraces.map((t) => h("a", { href: tracePath(t.trace_id), "data-nav": "", class: "linked-trace" }, `${t.trace_id.slice(0, 8)}… `)),
      trace.linked_left_out ? ` · ${trace.linked_left_out} more left out` : ""));
  }
  const verdict = h("section", { class: "verdict", "aria-label": "verdict" },
    h("div", { class: "headline", id: "verdict" }, diagnosis.headline));
  if (diagnosis.failure_cause) verdict.append(h("div", { class: "failure-cause", id: "failure-cause" }, "✖ ", diagnosis.failure_cause.text));
  // Records not (known to be) processed: the headline names the first; list them all when there are more.
  const pending = (diagnosis.deliveries || []).filter((delivery) => delivery.state !== "processed");
  if (pending.length > 1) for (const delivery of pending) verdict.append(h("div", { class: "pending-delivery" }, "◔ ", delivery.text));
  for (const failure of diagnosis.failures) verdict.append(h("div", { class: "failure" }, "✖ ", `${failure.service}: ${failure.span_name} — ${failure.error_type}: ${failure.message}`));
  for (const retry of diagnosis.retries) verdict.append(h("div", { class: "retry" }, "↻ ", `${retry.topic}[${retry.partition}]@${retry.offset}: ${retry.deliveries} deliveries to group ${retry.group} (${retry.service})`));
  for (const dead of diagnosis.dead_letters) verdict.append(h("div", { class: "dlq" }, "☠ ", `dead-lettered to ${dead.topic} by ${dead.service}`));
  if (diagnosis.broken_hops) verdict.append(h("div", { class: "broken" }, `⚠ ${diagnosis.broken_hops} hop(s) arrived without trace context`));
  main.append(verdict);
  if (diagnosis.hops.length) {
    main.append(h("details", { class: "hops", open: diagnosis.hops.length <= 12 ? "open" : null },
      h("summary", {}, `${diagnosis.hops.length} async hops`),
      h("table", { class: "hop-table" },
        h("thead", {}, h("tr", {}, ["topic", "producer → consumer", "publish", "queue wait", "processing", ""].map((x) => h("th", {}, x)))),
        h("tbody", {}, diagnosis.hops.map((hop) => h("tr", { class: hop.failed ? "failed" : null },
          h("td", {}, h("code", {}, hop.topic)),
          h("td", {}, `${hop.producer} → ${hop.consumer}`),
          h("td", { class: "num" }, formatDuration(hop.publish_ns)),
          h("td", { class: "num" }, formatDuration(hop.queue_wait_ns)),
          h("td", { class: "num" }, formatDuration(hop.processing_ns)),
          h("td", {}, hop.attempt > 1 ? `attempt ${hop.attempt}` : "", hop.clock_skew ? " clock skew" : "")))))));
  }

  const legend = h("p", { class: "legend muted" },
    h("span", { class: "key crit" }), " critical path  ",
    h("span", { class: "key wait-key" }), " waiting in a topic  ",
    h("span", { class: "key err" }), " error  ·  ↑/↓ or j/k move, Esc closes");
  const spacer = h("div", { class: "spacer", style: { height: `${rows.length * ROW}px` } });
  const viewport = h("div", { class: "waterfall", tabindex: "0", role: "listbox", "aria-label": "spans" }, spacer);
  const details = h("aside", { class: "details", "aria-live": "polite" }, h("p", { class: "muted" }, "Select a span to see its attributes, events and links."));
  viewport.style.height = `${Math.min(rows.length * ROW + 2, Math.max(240, window.innerHeight * 0.7))}px`;
  main.append(legend, h("div", { class: "trace-body" }, viewport, details));
  main.append(logsSection(logs, t0, t1, (spanId) => select(rows.findIndex((r) => r.span.span_id === spanId), true)));

  let selected = -1;
  const rendered = new Map();

  function visibleRows() {
    const out = [];
    let hideBelow = -1;
    for (const row of allRows) {
      if (hideBelow >= 0 && row.depth > hideBelow) continue;
      hideBelow = collapsed.has(row.span.span_id) ? row.depth : -1;
      out.push(row);
    }
    return out;
  }

  function toggle(span, event) {
    event.stopPropagation();
    if (collapsed.has(span.span_id)) collapsed.delete(span.span_id); else collapsed.add(span.span_id);
    const keep = selected >= 0 ? rows[selected].span.span_id : null;
    rows = visibleRows();
    selected = keep ? rows.findIndex((r) => r.span.span_id === keep) : -1;
    spacer.style.height = `${rows.length * ROW}px`;
    for (const el of rendered.values()) el.remove();
    rendered.clear();
    draw();
  }

  function rowElement(index) {
    const { span, depth } = rows[index];
    const wait = queueWaitNs(span);
    const classes = ["row"];
    const joinedByLink = Object.prototype.hasOwnProperty.call(linkedParents, span.span_id);
    if (span.trace_id !== trace.trace_id) classes.push("linked");
    if (critical.has(span.span_id)) classes.push("critical");
    if (span.status === "ERROR") classes.push("error");
    if (index === selected) classes.push("selected");
    const bars = h("div", { class: "bars" });
    if (wait) {
      const topic = span.attributes["messaging.destination.name"];
      bars.append(h("div", { class: "qwait", title: `waited ${formatDuration(wait)} in ${topic}`, style: { left: pct(span.start_ns - wait), width: width(wait) } }));
    }
    bars.append(h("div", { class: "bar", style: { left: pct(span.start_ns), width: width(span.end_ns - span.start_ns), background: serviceColour(span.service) } }));
    const label = h("div", { class: "label", style: { "padding-left": `${6 + Math.min(depth, 40) * 12}px` } },
      critical.has(span.span_id) ? h("span", { class: "diamond", title: "critical path" }, "◆") : h("span", { class: "diamond" }, ""),
      h("span", { class: "dot", style: { background: serviceColour(span.service) } }),
      joinedByLink ? h("button", { class: "fold", type: "button", "aria-expanded": collapsed.has(span.span_id) ? "false" : "true",
        title: `linked trace ${span.trace_id} — joined to this send by a link`, onclick: (event) => toggle(span, event) },
        `${collapsed.has(span.span_id) ? "▸" : "▾"} linked`) : "",
      h("span", { class: "svc" }, span.service), " ",
      h("span", { class: "name" }, span.name),
      span.status === "ERROR" ? h("span", { class: "err-mark", title: exceptionOf(span) }, " ✖") : "");
    const note = h("div", { class: "note" }, formatDuration(span.end_ns - span.start_ns),
      wait ? h("span", { class: "waited" }, ` · waited ${formatDuration(wait)}`) : "",
      (span.attributes["tracebridge.delivery.attempt"] || 1) > 1 ? ` · attempt ${span.attributes["tracebridge.delivery.attempt"]}` : "");
    return h("div", {
      class: classes.join(" "), role: "option", "aria-selected": index === selected ? "true" : "false",
      dataset: { index: String(index), spanId: span.span_id }, style: { top: `${index * ROW}px` },
      onclick: () => select(index),
    }, label, bars, note);
  }

  function draw() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(rows.length - 1, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW) + OVERSCAN);
    for (const [index, el] of rendered) {
      if (index < first || index > last) { el.remove(); rendered.delete(index); }
    }
    for (let index = first; index <= last; index++) {
      if (!rendered.has(index)) {
        const el = rowElement(index);
        rendered.set(index, el);
        spacer.append(el);
      }
    }
  }

  function redraw(index) {
    const el = rendered.get(index);
    if (el) { const fresh = rowElement(index); el.replaceWith(fresh); rendered.set(index, fresh); }
  }

  function select(index, scroll = false) {
    if (index < 0 || index >= rows.length) return;
    const previous = selected;
    selected = index;
    redraw(previous);
    redraw(index);
    if (scroll) {
      const top = index * ROW;
      if (top < viewport.scrollTop || top + ROW > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = Math.max(0, top - viewport.clientHeight / 3);
      draw();
    }
    const span = rows[index].span;
    history.replaceState(null, "", tracePath(trace.trace_id, span.span_id));
    showDetails(span);
  }

  function spanLink(traceIdOf, spanId, text) {
    if (traceIdOf === trace.trace_id && byId.has(spanId) && rows.some((r) => r.span.span_id === spanId)) {
      return h("a", { href: tracePath(traceIdOf, spanId), onclick: (event) => { event.preventDefault(); select(rows.findIndex((r) => r.span.span_id === spanId), true); } }, text);
    }
    return h("a", { href: tracePath(traceIdOf, spanId), "data-nav": "", class: "other-trace" }, text, " ↗");
  }

  function keyValues(object) {
    const keys = Object.keys(object || {}).sort();
    if (!keys.length) return h("p", { class: "muted" }, "none");
    return h("table", { class: "kv" }, h("tbody", {}, keys.map((key) => h("tr", {}, h("th", {}, key), h("td", {}, typeof object[key] === "string" ? object[key] : JSON.stringify(object[key]))))));
  }

  function describe(span, otherTraceId) {
    const where = otherTraceId === trace.trace_id ? "" : ` (trace ${otherTraceId.slice(0, 8)}…)`;
    return `${span.service}: ${span.name}${where}`;
  }

  function showDetails(span) {
    clear(details);
    details.append(h("h2", {}, span.name),
      h("p", {}, serviceChip(span.service), ` ${span.kind} · ${formatDuration(span.end_ns - span.start_ns)} · starts at +${formatDuration(span.start_ns - t0)}`),
      span.status === "ERROR" ? h("p", { class: "error-text" }, exceptionOf(span)) : "",
      h("p", { class: "muted ids" }, `span ${span.span_id}`, span.parent_span_id ? ` · parent ${span.parent_span_id}` : " · root"));
    if (span.parent_span_id && byId.has(span.parent_span_id)) {
      const parent = byId.get(span.parent_span_id);
      details.append(h("p", {}, "parent: ", spanLink(parent.trace_id, parent.span_id, describe(parent, parent.trace_id))));
    }
    if (linkedParents[span.span_id]) {
      const send = byId.get(linkedParents[span.span_id]);
      details.append(h("p", { class: "joined" }, "hop from ", spanLink(send.trace_id, send.span_id, describe(send, send.trace_id)), " (joined by a link: a trace of its own)"));
    }
    details.append(h("h3", {}, "Attributes"), keyValues(span.attributes));
    details.append(...spanLogs(logs, span.span_id, span.start_ns));
    details.append(h("h3", {}, `Events (${(span.events || []).length})`));
    for (const event of span.events || []) {
      details.append(h("div", { class: "event" }, h("strong", {}, event.name), ` +${formatDuration(event.time_ns - span.start_ns)}`, keyValues(event.attributes)));
    }
    details.append(h("h3", {}, "Links"));
    const outgoing = (span.links || []).map((link) => h("li", { class: "link-out" }, "→ ", spanLink(link.trace_id, link.span_id,
      byId.has(link.span_id) && link.trace_id === trace.trace_id ? describe(byId.get(link.span_id), trace.trace_id) : `span ${link.span_id} in trace ${link.trace_id}`),
      link.attributes && link.attributes["tracebridge.link.type"] ? h("span", { class: "muted" }, ` ${link.attributes["tracebridge.link.type"]}`) : ""));
    const back = (incoming.get(span.span_id) || []).map((other) => h("li", { class: "link-in" }, "← linked from ", spanLink(other.trace_id, other.span_id, describe(other, other.trace_id))));
    details.append(outgoing.length || back.length ? h("ul", { class: "links" }, outgoing, back) : h("p", { class: "muted" }, "none"));
    details.append(h("h3", {}, "Resource"), keyValues(span.resource));
  }

  function onKey(event) {
    if (event.target.closest("input, select, textarea")) return;
    if (event.key === "ArrowDown" || event.key === "j") { event.preventDefault(); select(Math.min(rows.length - 1, selected + 1), true); }
    else if (event.key === "ArrowUp" || event.key === "k") { event.preventDefault(); select(Math.max(0, selected - 1), true); }
    else if (event.key === "Home") { event.preventDefault(); select(0, true); }
    else if (event.key === "End") { event.preventDefault(); select(rows.length - 1, true); }
    else if (event.key === "Escape") {
      const previous = selected; selected = -1; redraw(previous);
      clear(details).append(h("p", { class: "muted" }, "Select a span to see its attributes, events and links."));
      history.replaceState(null, "", tracePath(trace.trace_id));
    }
  }

  viewport.addEventListener("scroll", () => requestAnimationFrame(draw));
  window.addEventListener("resize", draw);
  document.addEventListener("keydown", onKey);
  draw();
  const wanted = new URLSearchParams(location.search).get("span");
  const index = wanted ? rows.findIndex((r) => r.span.span_id === wanted) : -1;
  if (index >= 0) select(index, true);
  return () => {
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("resize", draw);
  };
}
