// The collector's own JSON API — the only thing the UI ever calls.  When the collector
// requires a bearer token (non-loopback bind), the page asks for it once per tab.

const TOKEN_KEY = "tracebridge.token";

export class NeedsToken extends Error {}

export async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers, credentials: "same-origin" });
  if (response.status === 401) throw new NeedsToken("this collector needs its bearer token");
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
  return body;
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}
