// Service map: services as nodes, topics as their own small nodes between producers and
// consumers, sync calls as solid edges, topic hops as dashed ones, each labelled with calls, p95
// and error rate; click an edge, a service or a topic to search its traces.
// Laid out by ELK's layered algorithm (elkjs, vendored as /ui/vendor/elk.bundled.js from the
// version pinned in tests/node/package-lock.json — `make ui-vendor` rebuilds it, a test checks
// the copy): nodes never overlap, labels sit on their edges, readable at fleet size. Wheel
// zooms around the pointer, dragging pans, "fit" shows everything again.
import { api } from "/ui/api.js";
import { h, s, clear, formatDuration, serviceColour } from "/ui/dom.js";

const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, all: 0 };
const NODE_H = 36;
const TOPIC_H = 22;
const LABEL_H = 16;
const PAD = 24;

let elkLoading = null;
function loadElk() {
  if (window.ELK) return Promise.resolve(window.ELK);
  if (!elkLoading) {
    elkLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/ui/vendor/elk.bundled.js";
      script.onload = () => resolve(window.ELK);
      script.onerror = () => { elkLoading = null; reject(new Error("could not load the layout engine")); };
      document.head.append(script);
    });
  }
  return elkLoading;
}

const measure = document.createElement("canvas").getContext("2d");
function textWidth(text, size) {
  measure.font = `${size}px system-ui, sans-serif`;
  return Math.ceil(measure.measureText(text).width);
}

function edgeLabel(edge) {
  const p95 = formatDuration(edge.p95_ms * 1e6);
  return `${edge.type === "async" ? `${edge.topic} · ` : ""}${edge.count}× · p95 ${p95}${edge.error_rate ? ` · ${(edge.error_rate * 100).toFixed(0)}% err` : ""}`;
}

// The ELK graph: one node per service and per topic; a sync edge per call pair, a publish edge
// per (producer, topic) and a consume edge per (producer, consumer, topic) — the latter carry
// the hop's figures.
function graphOf(edges) {
  const services = [...new Set(edges.flatMap((e) => [e.source, e.target]))].sort();
  const topics = [...new Set(edges.filter((e) => e.type === "async" && e.topic).map((e) => e.topic))].sort();
  const children = [
    ...services.map((name) => ({ id: `s:${name}`, width: textWidth(name, 13) + 42, height: NODE_H })),
    ...topics.map((topic) => ({ id: `t:${topic}`, width: textWidth(topic, 11) + 22, height: TOPIC_H })),
  ];
  const elkEdges = [];
  const published = new Set();
  edges.forEach((edge, index) => {
    const text = edgeLabel(edge);
    const labels = [{ id: `l${index}`, text, width: textWidth(text, 11) + 6, height: LABEL_H }];
    if (edge.type === "async" && edge.topic) {
      const key = `${edge.source}\u0000${edge.topic}`;
      if (!published.has(key)) {
        published.add(key);
        elkEdges.push({ id: `p${published.size}`, sources: [`s:${edge.source}`], targets: [`t:${edge.topic}`], api: edge, role: "publish" });
      }
      elkEdges.push({ id: `e${index}`, sources: [`t:${edge.topic}`], targets: [`s:${edge.target}`], labels, api: edge, role: "consume" });
    } else {
      elkEdges.push({ id: `e${index}`, sources: [`s:${edge.source}`], targets: [`s:${edge.target}`], labels, api: edge, role: "call" });
    }
  });
  return {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.edgeRouting": "ORTHOGONAL",
      "elk.spacing.nodeNode": "22",
      "elk.layered.spacing.nodeNodeBetweenLayers": "40",
      "elk.spacing.edgeNode": "14",
      "elk.spacing.edgeLabel": "3",
      "elk.edgeLabels.inline": "false",
      "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
      "elk.padding": "[top=8,left=8,bottom=8,right=8]",
    },
    children,
    edges: elkEdges,
  };
}

function pathOf(section) {
  const points = [section.startPoint, ...(section.bendPoints || []), section.endPoint];
  return points.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
}

export async function renderMap(main, navigate) {
  const params = new URLSearchParams(location.search);
  const range = RANGES[params.get("range")] !== undefined ? params.get("range") : "1h";
  const since = RANGES[range] ? (Date.now() - RANGES[range] * 1000) * 1e6 : 0;
  const [{ edges }, ELK] = await Promise.all([api(`/api/service-map?start_ns=${since}`), loadElk()]);
  clear(main);
  const rangeSelect = h("select", { "aria-label": "time range", onchange: () => navigate(`/map?range=${encodeURIComponent(rangeSelect.value)}`) },
    Object.keys(RANGES).map((key) => h("option", { value: key, selected: key === range ? "selected" : null }, key === "all" ? "all time" : `last ${key}`)));
  const fit = h("button", { type: "button", class: "fit" }, "fit");
  main.append(h("h1", {}, "Service map"), h("p", { class: "filters" }, rangeSelect, " ", fit,
    h("span", { class: "muted" }, " solid: synchronous calls · dashed: through a Kafka topic (the small dashed nodes) · wheel zooms, drag pans · click to search traces")));
  if (!edges.length) {
    main.append(h("p", { class: "muted empty" }, "No calls between services in this range yet."));
    return null;
  }
  const graph = graphOf(edges);
  const laid = await new ELK().layout(graph);
  const svg = s("svg", { class: "map", role: "img", "aria-label": "service map", preserveAspectRatio: "xMidYMid meet" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  const edgeLayer = s("g", { class: "edges" });
  const nodeLayer = s("g", { class: "nodes" });
  const labelLayer = s("g", { class: "labels" }); // above everything: no hit area covers a label
  svg.append(edgeLayer, nodeLayer, labelLayer);
  const search = (edge) => `/?${[edge.source, edge.target].map((name) => `service=${encodeURIComponent(name)}`).join("&")}`;
  for (const edge of laid.edges) {
    const { api: stats, role } = graph.edges.find((e) => e.id === edge.id);
    const d = (edge.sections || []).map(pathOf).join(" ");
    const type = role === "call" ? "sync" : "async";
    const dataset = { source: stats.source, type, topic: stats.topic || "" };
    if (role !== "publish") dataset.target = stats.target;
    const classes = role === "publish" ? "edge publish" : `edge ${type}${stats.error_rate ? " failing" : ""}`;
    const target = role === "publish" ? `/?service=${encodeURIComponent(stats.source)}` : search(stats);
    edgeLayer.append(s("g", { class: classes, tabindex: "0", role: "link", dataset,
      onclick: () => navigate(target), onkeydown: (event) => { if (event.key === "Enter") navigate(target); } },
      s("title", {}, role === "publish" ? `${stats.source} publishes to ${stats.topic}` : `${stats.source} → ${stats.target}: ${edgeLabel(stats)}`),
      s("path", { d, class: "hit" }),
      s("path", { d, class: "line", "marker-end": "url(#arrow)" })));
    for (const label of edge.labels || []) {
      labelLayer.append(s("g", { class: "label", dataset: { source: stats.source, target: stats.target, topic: stats.topic || "" }, onclick: () => navigate(target) },
        s("text", { x: label.x + label.width / 2, y: label.y + LABEL_H - 4, class: "edge-label", "text-anchor": "middle" }, label.text)));
    }
  }
  for (const node of laid.children) {
    const name = node.id.slice(2);
    if (node.id.startsWith("s:")) {
      const go = `/?service=${encodeURIComponent(name)}`;
      nodeLayer.append(s("g", { class: "node", tabindex: "0", role: "link", dataset: { service: name },
        onclick: () => navigate(go), onkeydown: (event) => { if (event.key === "Enter") navigate(go); } },
        s("rect", { x: node.x, y: node.y, width: node.width, height: node.height, rx: 8, style: { stroke: serviceColour(name) } }),
        s("circle", { cx: node.x + 14, cy: node.y + node.height / 2, r: 5, style: { fill: serviceColour(name) } }),
        s("text", { x: node.x + 26, y: node.y + node.height / 2 + 5, class: "node-label" }, name)));
    } else {
      const go = `/?attr=${encodeURIComponent(`messaging.destination.name=${name}`)}`;
      nodeLayer.append(s("g", { class: "topic", tabindex: "0", role: "link", dataset: { topic: name },
        onclick: () => navigate(go), onkeydown: (event) => { if (event.key === "Enter") navigate(go); } },
        s("rect", { x: node.x, y: node.y, width: node.width, height: node.height, rx: node.height / 2 }),
        s("text", { x: node.x + node.width / 2, y: node.y + node.height / 2 + 4, class: "topic-label", "text-anchor": "middle" }, name)));
    }
  }

  // Zoom and pan by moving the viewBox; "fit" shows the whole graph.
  const whole = { x: -PAD, y: -PAD, w: laid.width + 2 * PAD, h: laid.height + 2 * PAD };
  let view = { ...whole };
  const apply = () => svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  const toGraph = (event) => {
    const box = svg.getBoundingClientRect();
    const scale = Math.max(view.w / box.width, view.h / box.height);
    const offsetX = (box.width * scale - view.w) / 2;
    const offsetY = (box.height * scale - view.h) / 2;
    return { x: view.x - offsetX + (event.clientX - box.left) * scale, y: view.y - offsetY + (event.clientY - box.top) * scale, scale };
  };
  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    const at = toGraph(event);
    const factor = Math.min(4, Math.max(0.25, Math.exp(event.deltaY * 0.0015)));
    const w = Math.min(whole.w * 4, Math.max(80, view.w * factor));
    const ratio = w / view.w;
    view = { x: at.x - (at.x - view.x) * ratio, y: at.y - (at.y - view.y) * ratio, w, h: view.h * ratio };
    apply();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (event) => {
    if (event.target.closest(".node, .topic, .edge, .label")) return;
    drag = { x: event.clientX, y: event.clientY, view: { ...view }, scale: toGraph(event).scale };
    svg.setPointerCapture(event.pointerId);
    svg.classList.add("panning");
  });
  svg.addEventListener("pointermove", (event) => {
    if (!drag) return;
    view = { ...drag.view, x: drag.view.x - (event.clientX - drag.x) * drag.scale, y: drag.view.y - (event.clientY - drag.y) * drag.scale };
    apply();
  });
  const stop = () => { drag = null; svg.classList.remove("panning"); };
  svg.addEventListener("pointerup", stop);
  svg.addEventListener("pointercancel", stop);
  fit.addEventListener("click", () => { view = { ...whole }; apply(); });
  apply();
  main.append(h("div", { class: "map-wrap" }, svg));
  return null;
}
