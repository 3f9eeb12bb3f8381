// Service map: services as nodes, sync calls as solid edges, topics as dashed edges, each with
// calls, p95 and error rate; click an edge (or a node) to search its traces.
import { api } from "/ui/api.js";
import { h, s, clear, formatDuration, serviceColour } from "/ui/dom.js";

const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, all: 0 };
const COLUMN = 265;
const ROW = 110;
const NODE_W = 165;
const NODE_H = 40;

function layers(nodes, edges) {
  const out = new Map(nodes.map((n) => [n, []]));
  for (const edge of edges) out.get(edge.source).push(edge.target);
  const depth = new Map();
  const visiting = new Set();
  function visit(node) {
    if (depth.has(node)) return depth.get(node);
    if (visiting.has(node)) return 0; // a cycle: cut it here
    visiting.add(node);
    let d = 0;
    for (const edge of edges) if (edge.target === node && edge.source !== node) d = Math.max(d, visit(edge.source) + 1);
    visiting.delete(node);
    depth.set(node, d);
    return d;
  }
  nodes.forEach(visit);
  return depth;
}

export async function renderMap(main, navigate) {
  const params = new URLSearchParams(location.search);
  const range = RANGES[params.get("range")] !== undefined ? params.get("range") : "1h";
  const since = RANGES[range] ? (Date.now() - RANGES[range] * 1000) * 1e6 : 0;
  const { edges } = await api(`/api/service-map?start_ns=${since}`);
  clear(main);
  const rangeSelect = h("select", { "aria-label": "time range", onchange: () => navigate(`/map?range=${encodeURIComponent(rangeSelect.value)}`) },
    Object.keys(RANGES).map((key) => h("option", { value: key, selected: key === range ? "selected" : null }, key === "all" ? "all time" : `last ${key}`)));
  main.append(h("h1", {}, "Service map"), h("p", { class: "filters" }, rangeSelect,
    h("span", { class: "muted" }, " solid: synchronous calls · dashed: through a Kafka topic · click an edge or a service to search its traces")));
  if (!edges.length) {
    main.append(h("p", { class: "muted empty" }, "No calls between services in this range yet."));
    return null;
  }
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.target]))].sort();
  const depth = layers(nodes, edges);
  const columns = new Map();
  for (const node of nodes) {
    const d = depth.get(node);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(node);
  }
  // Order each column by where its callers sit (one barycentre pass), so edges cross less.
  const position = new Map();
  for (const d of [...columns.keys()].sort((a, b) => a - b)) {
    const list = columns.get(d);
    const weight = (node) => {
      const ys = edges.filter((e) => e.target === node && position.has(e.source)).map((e) => position.get(e.source).y);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
    };
    list.sort((a, b) => weight(a) - weight(b) || (a < b ? -1 : 1));
    list.forEach((node, i) => position.set(node, { x: 20 + d * COLUMN, y: 40 + i * ROW }));
  }
  const width = 40 + (Math.max(...columns.keys()) + 1) * COLUMN;
  const height = 140 + Math.max(...[...columns.values()].map((l) => l.length)) * ROW;
  const svg = s("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "service map" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  const bottom = Math.max(...[...position.values()].map((p) => p.y)) + NODE_H;
  const edgeLayer = s("g", { class: "edges" });
  const labelLayer = s("g", { class: "labels" });
  svg.append(edgeLayer);
  const pairs = new Map();
  for (const edge of edges) {
    const key = `${edge.source}→${edge.target}`;
    pairs.set(key, (pairs.get(key) || 0) + 1);
    const nth = pairs.get(key) - 1;
    const a = position.get(edge.source);
    const b = position.get(edge.target);
    const back = b.x <= a.x;
    const x1 = back ? a.x + NODE_W / 2 : a.x + NODE_W;
    const y1 = back ? a.y + NODE_H : a.y + NODE_H / 2;
    const x2 = back ? b.x + NODE_W / 2 : b.x;
    const y2 = back ? b.y : b.y + NODE_H / 2;
    // Parallel edges fan out; an edge that skips columns dips below the nodes it passes.
    const skip = Math.round((b.x - a.x) / COLUMN) > 1;
    const lane = bottom + 30 + 18 * nth; // skipping edges run below every node
    const bend = 26 * nth;
    const c1 = back ? [x1 + 60, y1 + 60] : skip ? [x1 + 40, lane] : [x1 + (x2 - x1) / 3, y1 + bend];
    const c2 = back ? [x2 + 60, y2 - 60] : skip ? [x2 - 40, lane] : [x2 - (x2 - x1) / 3, y2 + bend];
    const d = `M ${x1} ${y1} C ${c1[0]} ${c1[1]}, ${c2[0]} ${c2[1]}, ${x2} ${y2}`;
    const lx = (x1 + 3 * c1[0] + 3 * c2[0] + x2) / 8;
    const ly = (y1 + 3 * c1[1] + 3 * c2[1] + y2) / 8;
    const p95 = formatDuration(edge.p95_ms * 1e6);
    const label = `${edge.type === "async" ? `${edge.topic} · ` : ""}${edge.count}× · p95 ${p95}${edge.error_rate ? ` · ${(edge.error_rate * 100).toFixed(0)}% err` : ""}`;
    const services = [edge.source, edge.target].map((name) => `service=${encodeURIComponent(name)}`).join("&");
    const group = s("g", {
      class: `edge ${edge.type}${edge.error_rate ? " failing" : ""}`, tabindex: "0", role: "link",
      dataset: { source: edge.source, target: edge.target, type: edge.type, topic: edge.topic || "" },
      onclick: () => navigate(`/?${services}`),
      onkeydown: (event) => { if (event.key === "Enter") navigate(`/?${services}`); },
    },
      s("title", {}, `${edge.source} → ${edge.target}: ${label}`),
      s("path", { d, class: "hit" }),
      s("path", { d, class: "line", "marker-end": "url(#arrow)" }));
    edgeLayer.append(group);
    // Labels sit on a layer above every edge, so no other edge's hit area covers them.
    labelLayer.append(s("g", { class: "label", dataset: { source: edge.source, target: edge.target, topic: edge.topic || "" },
      onclick: () => navigate(`/?${services}`) },
      s("text", { x: lx, y: ly - 6, class: "edge-label", "text-anchor": "middle" }, label)));
  }
  for (const node of nodes) {
    const { x, y } = position.get(node);
    svg.append(s("g", { class: "node", tabindex: "0", role: "link", dataset: { service: node },
      onclick: () => navigate(`/?service=${encodeURIComponent(node)}`),
      onkeydown: (event) => { if (event.key === "Enter") navigate(`/?service=${encodeURIComponent(node)}`); } },
      s("rect", { x, y, width: NODE_W, height: NODE_H, rx: 8, style: { stroke: serviceColour(node) } }),
      s("circle", { cx: x + 14, cy: y + NODE_H / 2, r: 5, style: { fill: serviceColour(node) } }),
      s("text", { x: x + 26, y: y + NODE_H / 2 + 5, class: "node-label" }, node)));
  }
  svg.append(labelLayer);
  main.append(h("div", { class: "map-wrap" }, svg));
  return null;
}
