// Doctor: where trace context breaks, grouped by symptom, topic and service, with an example
// trace for each.
import { api } from "/ui/api.js";
import { h, clear, tracePath } from "/ui/dom.js";

const RANGES = { "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

export async function renderDoctor(main, navigate) {
  const params = new URLSearchParams(location.search);
  const range = RANGES[params.get("range")] ? params.get("range") : "1h";
  const report = await api(`/api/doctor?since_s=${RANGES[range]}`);
  clear(main);
  const rangeSelect = h("select", { "aria-label": "time range", onchange: () => navigate(`/doctor?range=${encodeURIComponent(rangeSelect.value)}`) },
    Object.keys(RANGES).map((key) => h("option", { value: key, selected: key === range ? "selected" : null }, `last ${key}`)));
  main.append(h("h1", {}, "Doctor"), h("p", { class: "filters" }, rangeSelect, h("span", { class: "muted" }, ` ${report.spans_examined.toLocaleString()} spans examined`)));
  if (!report.broken.length) {
    main.append(h("p", { class: "ok-text" }, "✓ No broken context chain: every consumer found its producer's context, and every sent record was processed."));
    return null;
  }
  main.append(h("table", { class: "doctor" },
    h("thead", {}, h("tr", {}, ["symptom", "why", "topic", "producer", "consumer", "count", "example"].map((x) => h("th", {}, x)))),
    h("tbody", {}, report.broken.map((chain) => h("tr", {},
      h("td", {}, chain.symptom),
      h("td", {}, chain.reason ? h("code", {}, chain.reason) : ""),
      h("td", {}, h("code", {}, chain.topic)),
      h("td", {}, chain.producer, chain.producer_confidence ? h("span", { class: `badge sure-${chain.producer_confidence}`, title: chain.producer_evidence }, ` ${chain.producer_confidence}`) : "",
        chain.producer_evidence ? h("div", { class: "muted evidence" }, chain.producer_evidence) : ""),
      h("td", {}, chain.consumer),
      h("td", { class: "num" }, String(chain.count)),
      h("td", {}, h("a", { href: tracePath(chain.example_trace_id), "data-nav": "" }, `${chain.example_trace_id.slice(0, 12)}…`)))))));
  return null;
}
