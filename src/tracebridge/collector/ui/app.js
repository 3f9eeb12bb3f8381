// Router: every page is this one document; the path and query say what to show, so any view
// is a shareable link.
import { api, NeedsToken, saveToken } from "/ui/api.js";
import { h, clear } from "/ui/dom.js";
import { renderSearch } from "/ui/search.js";
import { renderTrace } from "/ui/trace.js";
import { renderMap } from "/ui/map.js";
import { renderDoctor } from "/ui/doctor.js";

const main = document.getElementById("main");
let cleanup = null;

export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

async function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const path = location.pathname;
  const page = path.startsWith("/trace/") ? "trace" : path === "/map" ? "map" : path === "/doctor" ? "doctor" : "search";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  clear(main).append(h("p", { class: "muted" }, "Loading…"));
  try {
    if (page === "trace") cleanup = await renderTrace(main, decodeURIComponent(path.slice("/trace/".length)), navigate);
    else if (page === "map") cleanup = await renderMap(main, navigate);
    else if (page === "doctor") cleanup = await renderDoctor(main, navigate);
    else cleanup = await renderSearch(main, navigate);
    document.title = `tracebridge — ${page}`;
  } catch (error) {
    showError(error);
  }
  refreshHealth();
}

function showError(error) {
  clear(main);
  if (error instanceof NeedsToken) {
    const input = h("input", { type: "password", name: "token", placeholder: "bearer token", autocomplete: "off", required: true });
    const form = h(
      "form",
      { class: "token-form", onsubmit: (event) => { event.preventDefault(); saveToken(input.value); route(); } },
      h("label", {}, "This collector asks for its bearer token (TRACEBRIDGE_COLLECTOR_TOKEN): ", input),
      h("button", { type: "submit" }, "Use token"),
    );
    main.append(h("h1", {}, "Token needed"), form);
    input.focus();
    return;
  }
  main.append(h("h1", {}, "Something went wrong"), h("p", { class: "error-text", role: "alert" }, String(error.message || error)));
}

async function refreshHealth() {
  const badge = document.getElementById("health");
  try {
    const health = await api("/api/health");
    badge.textContent = `${Number(health.spans_received).toLocaleString()} spans received`;
  } catch {
    badge.textContent = "";
  }
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", route);
route();
