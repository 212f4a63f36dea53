// The console's one door to the server: fetch() on /api with the token from this
// tab's sessionStorage in the Authorization header (never in a URL or a cookie).

const KEY = "orchestrator.console.token";
const RANK = { read: 1, operate: 2, admin: 3 };

export class ApiError extends Error {
  constructor(message, status, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** Whether `me` (the /api/me answer) holds `scope` or one above it. */
export function can(me, scope) {
  return Boolean(me) && (RANK[me.scope] || 0) >= RANK[scope];
}

/** A path with its query: only the params that have a value. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** GET (or POST with a JSON body) on /api; the JSON answer, or an ApiError. */
export async function api(path, { method = "GET", body, tokenValue } = {}) {
  const bearer = tokenValue || token();
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api${path}`, init);
  } catch (error) {
    throw new ApiError(`the server cannot be reached (${error.message})`, 0);
  }
  let doc = null;
  try {
    doc = await response.json();
  } catch {
    doc = null;
  }
  if (!response.ok) {
    const message = doc && doc.error ? doc.error : `HTTP ${response.status}`;
    const error = new ApiError(message, response.status, doc && doc.field);
    if (response.status === 401 && !tokenValue) {
      forgetToken();
      window.dispatchEvent(new CustomEvent("console:signed-out", { detail: message }));
    }
    throw error;
  }
  return doc;
}
