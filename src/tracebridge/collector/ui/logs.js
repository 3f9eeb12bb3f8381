// Log lines beside the spans: the trace's lines on one timeline under the waterfall (every
// service's, interleaved in time order, errors highlighted), and a span's own lines in its
// details.  Lines come from /api/traces/{id}/logs; a collector that reads Jaeger or Tempo has
// none, and says so instead of failing the page.
import { api } from "/ui/api.js";
import { h, formatDuration, serviceChip, tracePath } from "/ui/dom.js";

export async function fetchLogs(traceId) {
  try {
    return { lines: (await api(`/api/traces/${encodeURIComponent(traceId)}/logs`)).logs, note: "" };
  } catch (error) {
    return { lines: [], note: String(error.message || error) };
  }
}

function lineRow(line, t0, onSpan) {
  const span = line.span_id && onSpan ? h("a", { href: tracePath(line.trace_id, line.span_id), class: "log-span", onclick: (event) => { event.preventDefault(); onSpan(line.span_id); } }, "span") : "";
  return h("li", { class: `log-line${line.error ? " log-error" : ""}`, "data-span-id": line.span_id || "" },
    h("span", { class: "log-time num" }, `+${formatDuration(Math.max(0, line.time_ns - t0))}`),
    h("span", { class: "log-severity" }, line.severity),
    serviceChip(line.service),
    h("span", { class: "log-body" }, line.body),
    span);
}

// The trace's lines, each placed on the trace's time axis (a tick at its offset) and listed.
export function logsSection(found, t0, t1, onSpan) {
  const { lines, note } = found;
  const total = Math.max(1, t1 - t0);
  const ticks = h("div", { class: "log-ticks", "aria-hidden": "true" },
    lines.map((line) => h("span", { class: `log-tick${line.error ? " log-error" : ""}`, style: { left: `${Math.min(100, Math.max(0, (100 * (line.time_ns - t0)) / total)).toFixed(3)}%` } })));
  const errors = lines.filter((line) => line.error).length;
  const summary = lines.length
    ? `${lines.length} log line${lines.length > 1 ? "s" : ""}${errors ? `, ${errors} error${errors > 1 ? "s" : ""}` : ""}`
    : (note ? `no log lines: ${note}` : "no log lines for this trace");
  return h("section", { class: "logs", "aria-label": "logs" },
    h("h2", {}, summary),
    lines.length ? ticks : "",
    lines.length ? h("ol", { class: "log-lines" }, lines.map((line) => lineRow(line, t0, onSpan))) : "");
}

// One span's lines, for its details panel.
export function spanLogs(found, spanId, startNs) {
  const mine = found.lines.filter((line) => line.span_id === spanId);
  return [h("h3", {}, `Logs (${mine.length})`),
    mine.length ? h("ol", { class: "log-lines span-logs" }, mine.map((line) => lineRow(line, startNs, null))) : h("p", { class: "muted" }, "none")];
}
