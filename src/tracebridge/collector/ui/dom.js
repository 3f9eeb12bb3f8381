// DOM helpers.  Span-derived text only ever becomes a Text node or an attribute value set via
// setAttribute — never markup — so a span named "<img onerror=…>" is shown, not run.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "style") for (const [name, v] of Object.entries(value)) el.style.setProperty(name, v);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "href" && !String(value).startsWith("/")) throw new Error("only same-origin paths may be links");
    else el.setAttribute(key, String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function formatDuration(ns) {
  const value = Number(ns);
  if (!Number.isFinite(value)) return "?";
  if (value >= 60e9) return `${(value / 60e9).toFixed(1)} min`;
  if (value >= 1e9) return `${(value / 1e9).toFixed(value >= 10e9 ? 1 : 2)} s`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(value >= 100e6 ? 0 : 1)} ms`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(0)} µs`;
  return `${value.toFixed(0)} ns`;
}

export function formatTime(ns) {
  const date = new Date(Number(ns) / 1e6);
  return date.toLocaleString(undefined, { hour12: false });
}

export function serviceColour(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 52%)`;
}

export function serviceChip(name) {
  return h("span", { class: "chip", title: name }, h("span", { class: "dot", style: { background: serviceColour(name) } }), name);
}

export function tracePath(traceId, spanId) {
  const path = `/trace/${encodeURIComponent(traceId)}`;
  return spanId ? `${path}?span=${encodeURIComponent(spanId)}` : path;
}
