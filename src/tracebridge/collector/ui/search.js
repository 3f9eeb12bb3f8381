// Search: recent traces, filtered by service(s), any attribute key=value (order.id=…), minimum
// duration, errors only and time range; the URL holds the filters.
import { api, NeedsToken } from "/ui/api.js";
import { h, clear, formatDuration, formatTime, serviceChip, tracePath } from "/ui/dom.js";

const PAGE_SIZE = 20;
const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, all: 0 };

export async function renderSearch(main, navigate) {
  const params = new URLSearchParams(location.search);
  const services = params.getAll("service").filter(Boolean);
  const attr = params.get("attr") || "";
  const minMs = params.get("min_ms") || "";
  const errors = params.get("errors") === "1";
  const range = RANGES[params.get("range")] !== undefined ? params.get("range") : "24h";
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);

  const known = (await api("/api/services")).services;
  const query = new URLSearchParams();
  for (const name of services) query.append("service", name);
  if (attr) query.set("attr", attr);
  if (minMs) query.set("min_duration_ms", minMs);
  if (errors) query.set("error", "1");
  if (RANGES[range]) query.set("start_ns", String((Date.now() - RANGES[range] * 1000) * 1e6));
  query.set("limit", String(PAGE_SIZE + 1));
  query.set("offset", String((page - 1) * PAGE_SIZE));
  let traces = [];
  let problem = null;
  try {
    traces = (await api(`/api/traces?${query}`)).traces;
  } catch (error) {
    if (error instanceof NeedsToken) throw error;
    problem = error.message;
  }
  const more = traces.length > PAGE_SIZE;
  traces = traces.slice(0, PAGE_SIZE);

  const serviceSelect = h("select", { name: "service", "aria-label": "service" },
    h("option", { value: "" }, "any service"),
    known.map((name) => h("option", { value: name, selected: services[0] === name ? "selected" : null }, name)));
  const attrInput = h("input", { name: "attr", value: attr, placeholder: "order.id=o-… or any key=value", size: 34, "aria-label": "attribute" });
  const minInput = h("input", { name: "min_ms", type: "number", min: 0, step: "any", value: minMs, placeholder: "min ms", "aria-label": "minimum duration (ms)" });
  const errorsBox = h("input", { name: "errors", type: "checkbox", checked: errors ? "checked" : null });
  const rangeSelect = h("select", { name: "range", "aria-label": "time range" },
    Object.keys(RANGES).map((key) => h("option", { value: key, selected: key === range ? "selected" : null }, key === "all" ? "all time" : `last ${key}`)));

  function urlFor(changes) {
    const next = new URLSearchParams();
    const values = { services, attr, min_ms: minMs, errors: errors ? "1" : "", range, page: String(page), ...changes };
    for (const name of values.services) next.append("service", name);
    if (values.attr) next.set("attr", values.attr);
    if (values.min_ms) next.set("min_ms", values.min_ms);
    if (values.errors) next.set("errors", "1");
    if (values.range !== "24h") next.set("range", values.range);
    if (values.page !== "1") next.set("page", values.page);
    const text = next.toString();
    return text ? `/?${text}` : "/";
  }

  const form = h("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const chosen = serviceSelect.value ? [serviceSelect.value, ...services.slice(1).filter((s) => s !== serviceSelect.value)] : services.slice(1);
      navigate(urlFor({ services: chosen, attr: attrInput.value.trim(), min_ms: minInput.value, errors: errorsBox.checked ? "1" : "", range: rangeSelect.value, page: "1" }));
    },
  },
    serviceSelect, attrInput, minInput,
    h("label", { class: "check" }, errorsBox, " errors only"),
    rangeSelect,
    h("button", { type: "submit" }, "Search"));

  clear(main);
  main.append(h("h1", {}, "Traces"), form);
  if (services.length > 1) {
    main.append(h("p", { class: "muted" }, "through every one of: ", services.map(serviceChip)));
  }
  if (problem) main.append(h("p", { class: "error-text", role: "alert" }, problem));
  if (!traces.length && !problem) {
    main.append(h("p", { class: "muted empty" }, "No trace matches. Widen the time range or clear a filter."));
    return null;
  }
  // A link-only consumer's trace is a hop of the order it links to: listed right under that
  // order's trace when both are on the page, and always saying whose hop it is.
  const shown = new Map(traces.map((t) => [t.trace_id, t]));
  const under = new Map(); // trace id → the linked traces listed beneath it
  const ordered = [];
  for (const t of traces) {
    const host = (t.links_to || []).find((id) => shown.has(id) && id !== t.trace_id);
    if (host) { if (!under.has(host)) under.set(host, []); under.get(host).push(t); } else ordered.push(t);
  }
  const listed = [];
  const place = (t, depth) => {
    if (listed.some((x) => x.t === t)) return;
    listed.push({ t, depth });
    for (const child of under.get(t.trace_id) || []) place(child, depth + 1);
  };
  for (const t of ordered) place(t, 0);
  for (const t of traces) place(t, 0); // a cycle of links: nothing is ever hidden
  const rows = listed.map(({ t, depth }) => h("tr", { class: depth ? "result linked-result" : "result", dataset: { traceId: t.trace_id }, onclick: (event) => { if (!event.target.closest("a")) navigate(tracePath(t.trace_id)); } },
    h("td", { class: "when" }, formatTime(t.start_ns)),
    h("td", { class: "root", style: depth ? { "padding-left": `${8 + 16 * Math.min(depth, 4)}px` } : null },
      depth ? "↳ " : "",
      h("a", { href: tracePath(t.trace_id), "data-nav": "" }, `${t.root_service}: ${t.root_name}`),
      (t.links_to || []).length ? h("span", { class: "muted linked-from", title: "a consumer joined to this order by a link: part of its story" },
        " · hop of ", (t.links_to || []).map((id) => h("a", { href: tracePath(id), "data-nav": "", class: "story" }, `${id.slice(0, 8)}…`))) : ""),
    h("td", { class: "services" }, t.services.map(serviceChip)),
    h("td", { class: "num" }, formatDuration(t.end_ns - t.start_ns)),
    h("td", { class: "num" }, String(t.span_count)),
    h("td", { class: "num" }, t.error_count ? h("span", { class: "badge error" }, `${t.error_count} errors`) : "—"),
    h("td", {}, t.broken ? h("span", { class: "badge broken", title: "a consumer started its own trace with no link: the context chain is broken" }, "broken chain") : ""),
  ));
  main.append(h("table", { class: "results" },
    h("thead", {}, h("tr", {}, ["started", "root", "services", "end to end", "spans", "errors", ""].map((label) => h("th", {}, label)))),
    h("tbody", {}, rows)));
  main.append(h("div", { class: "pager" },
    page > 1 ? h("a", { href: urlFor({ page: String(page - 1) }), "data-nav": "", rel: "prev" }, "← newer") : h("span"),
    h("span", { class: "muted" }, `page ${page}`),
    more ? h("a", { href: urlFor({ page: String(page + 1) }), "data-nav": "", rel: "next" }, "older →") : h("span")));
  return null;
}
