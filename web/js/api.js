// HTTP layer for the uploader API (docs/architecture.md: wire format).
//
// Kept separate from the upload logic (as tus-js-client does with its HTTP
// stack) so that retry policy lives in one place (ApiError.retryable) and the
// uploader never parses responses itself.

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", details = {}, retryAfter = null,
                         network = false, aborted = false, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "ApiError";
    this.status = status;          // HTTP status; 0 when no response arrived
    this.code = code;              // error code from the server's table
    this.details = details;        // extra fields, e.g. `missing` for incomplete
    this.retryAfter = retryAfter;  // seconds, from Retry-After (429/503)
    this.network = network;        // no response at all (offline, reset, DNS)
    this.aborted = aborted;        // we aborted it ourselves (pause/cancel)
  }

  // Network errors, 5xx, 409 conflict (a merge in the way) and 429 may succeed
  // later; any other 4xx means the request itself is wrong and would fail again.
  // 409 `incomplete` is not retried as such: the answer to it is to send the
  // missing chunks, not to repeat the same request.
  get retryable() {
    if (this.aborted) return false;
    if (this.network || this.status >= 500 || this.status === 429) return true;
    if (this.status === 409 || this.status === 423) return this.code !== "incomplete";
    return false;
  }
}

export function isAbort(err) {
  return err?.name === "AbortError" || err?.aborted === true;
}

// Retry-After is either delta-seconds or an HTTP date.
function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

async function errorFrom(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: a proxy's HTML page */ }
  const err = body?.error ?? {};
  const { code = "", message = "", ...details } = err;
  return new ApiError(message || `${resp.status} ${resp.statusText || "error"}`, {
    status: resp.status, code, details,
    retryAfter: parseRetryAfter(resp.headers.get("Retry-After")),
  });
}

export class Api {
  // auth: { token(): string|null, reauthenticate(): Promise<boolean> } or null.
  // reauthenticate asks the user for a new token after a 401; one prompt is
  // shared by every request that failed at the same time.
  constructor({ base = "", auth = null } = {}) {
    this.base = base;
    this.auth = auth;
  }

  async request(method, path, { json, body, signal, headers = {}, expect = "json" } = {}) {
    for (let authTries = 0; ; authTries++) {
      const h = { ...headers };
      const token = this.auth?.token();
      if (token) h.Authorization = `Bearer ${token}`;
      let payload = body;
      if (json !== undefined) {
        h["Content-Type"] = "application/json";
        payload = JSON.stringify(json);
      }
      let resp;
      try {
        resp = await fetch(this.base + path, {
          method, headers: h, body: payload, signal, cache: "no-store",
          credentials: "same-origin",
        });
      } catch (e) {
        if (isAbort(e) || signal?.aborted) {
          throw new ApiError("aborted", { aborted: true, cause: e });
        }
        // fetch rejects with a TypeError for every transport failure.
        throw new ApiError("Cannot reach the server", { network: true, cause: e });
      }
      if (resp.status === 401 && this.auth && authTries < 3) {
        await resp.body?.cancel();
        if (await this.auth.reauthenticate()) continue;
      }
      if (!resp.ok) throw await errorFrom(resp);
      if (expect === "none" || resp.status === 204) return { status: resp.status, data: null };
      let data = null;
      try { data = await resp.json(); } catch (e) {
        throw new ApiError("The server sent an unreadable answer", { status: resp.status, cause: e });
      }
      return { status: resp.status, data };
    }
  }

  init({ filename, size, chunkSize, md5 }, signal) {
    const json = { filename, size, chunk_size: chunkSize };
    if (md5) json.md5 = md5;
    return this.request("POST", "/upload/init", { json, signal }).then((r) => r.data);
  }

  // The chunk body is a Blob slice: the browser streams it from disk and sets
  // Content-Length itself, so the main thread never holds the bytes.
  putChunk(id, index, blob, md5, signal) {
    const q = new URLSearchParams({ index: String(index) });
    if (md5) q.set("md5", md5);
    return this.request("PUT", `/upload/${id}/chunk?${q}`, {
      body: blob, signal, headers: { "Content-Type": "application/octet-stream" },
    }).then((r) => r.data);
  }

  status(id, signal) {
    return this.request("GET", `/upload/${id}/status`, { signal }).then((r) => r.data);
  }

  // Resolves to { status: 200|202, data: upload object }.
  complete(id, md5, signal) {
    return this.request("POST", `/upload/${id}/complete`, { json: md5 ? { md5 } : {}, signal });
  }

  remove(id, signal) {
    return this.request("DELETE", `/upload/${id}`, { signal, expect: "none" });
  }

  list(status, signal) {
    const q = status ? `?${new URLSearchParams({ status })}` : "";
    return this.request("GET", `/uploads${q}`, { signal }).then((r) => r.data?.uploads ?? []);
  }

  // Downloads need the token too when auth is on, and an <a href> cannot
  // send headers: fetch the file and hand the browser a blob: URL instead.
  async download(location, signal) {
    const h = {};
    const token = this.auth?.token();
    if (token) h.Authorization = `Bearer ${token}`;
    const resp = await fetch(this.base + location, { headers: h, signal });
    if (!resp.ok) throw await errorFrom(resp);
    return resp.blob();
  }
}
