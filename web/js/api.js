// HTTP layer for the uploader API (the wire format in the README).
//
// Kept apart from the upload logic (as tus-js-client does with its HTTP
// stack): the uploader never parses responses. Whether a failure is worth
// retrying is the server's word (`retryable` in every error object, from its
// error table), or the lack of any answer from it; the page keeps no list of
// codes of its own.

import { send, TransportError } from "./transport.js";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", details = {}, retryAfter = null,
                         retryable = false, network = false, stalled = false,
                         aborted = false, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "ApiError";
    this.status = status;          // HTTP status; 0 when no answer arrived
    this.code = code;              // error code from the server's table
    this.details = details;        // extra fields, e.g. `missing` for incomplete
    this.retryAfter = retryAfter;  // seconds, from Retry-After (429/503)
    this.network = network;        // no answer from the server at all
    this.stalled = stalled;        // ... because the request stopped moving
    this.aborted = aborted;        // we aborted it ourselves (pause/cancel)
    this.retryable = !aborted && (network || retryable);
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

function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

export function errorFrom({ status, statusText, text, header }) {
  const error = parseJson(text)?.error;
  const retryAfter = parseRetryAfter(header("Retry-After"));
  if (!error || typeof error.code !== "string") {
    // Not an answer of the uploader (a proxy's HTML page): a 5xx means it
    // could not reach the server behind it, which is an outage like a
    // refused connection; anything else is a refusal of the request.
    return new ApiError(`${status} ${statusText || "error"}`, {
      status, retryAfter, network: status >= 500,
    });
  }
  const { code, message = "", retryable = false, ...details } = error;
  return new ApiError(message || `${status} ${statusText || "error"}`, {
    status, code, details, retryAfter, retryable: retryable === true,
  });
}

export class Api {
  // auth: { token(): string|null, reauthenticate(): Promise<boolean> } or null.
  // reauthenticate asks the user for a new token after a 401; one prompt is
  // shared by every request that failed at the same time.
  // stallMs: a request with no progress for that long is aborted (retryable).
  constructor({ base = "", auth = null, stallMs = 30_000 } = {}) {
    this.base = base;
    this.auth = auth;
    this.stallMs = stallMs;
  }

  async request(method, path, { json, body = null, signal, headers = {}, stallMs = this.stallMs,
                                onUploadProgress } = {}) {
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
        resp = await send({ method, url: this.base + path, headers: h, body: payload, signal,
                            stallMs, onUploadProgress });
      } catch (e) {
        if (!(e instanceof TransportError)) {
          throw new ApiError("aborted", { aborted: true, cause: e });
        }
        throw new ApiError(e.stalled ? "The server stopped responding" : "Cannot reach the server",
                           { network: true, stalled: e.stalled, cause: e });
      }
      if (resp.status === 401 && this.auth && authTries < 3) {
        if (await this.auth.reauthenticate()) continue;
      }
      if (resp.status < 200 || resp.status >= 300) throw errorFrom(resp);
      if (resp.status === 204 || !resp.text) return { status: resp.status, data: null };
      const data = parseJson(resp.text);
      if (data === null) {
        throw new ApiError("The server sent an unreadable answer", { status: resp.status });
      }
      return { status: resp.status, data };
    }
  }

  init({ filename, size, chunkSize, md5, metadata }, signal) {
    const json = { filename, size, chunk_size: chunkSize };
    if (md5) json.md5 = md5;
    if (metadata) json.metadata = metadata;
    return this.request("POST", "/upload/init", { json, signal }).then((r) => r.data);
  }

  status(id, signal) {
    return this.request("GET", `/upload/${id}/status`, { signal }).then((r) => r.data);
  }

  // Resolves to { status: 200|202, data: upload object }. The server may hold
  // the answer up to `waitMs` (merge.wait_seconds) before a 202: no stall.
  complete(id, md5, signal, { waitMs = 0 } = {}) {
    return this.request("POST", `/upload/${id}/complete`, {
      json: md5 ? { md5 } : {}, signal, stallMs: this.stallMs && this.stallMs + waitMs,
    });
  }

  remove(id, signal) {
    return this.request("DELETE", `/upload/${id}`, { signal });
  }

  // One page of GET /uploads, newest first: { uploads, nextCursor }, where
  // nextCursor (null on the last page) is passed back for the next one.
  async listPage(status, { cursor = null, limit = null } = {}, signal) {
    const params = new URLSearchParams();
    if (status) params.set("status", status);
    if (limit) params.set("limit", String(limit));
    if (cursor) params.set("cursor", cursor);
    const qs = params.toString();
    const q = qs ? `?${qs}` : "";
    const r = await this.request("GET", `/uploads${q}`, { signal });
    return { uploads: r.data?.uploads ?? [], nextCursor: r.data?.next_cursor ?? null };
  }

  // Direct mode: presigned PUT URLs of these { index, md5 } chunks, in order.
  partUrls(id, parts, signal) {
    return this.request("POST", `/upload/${id}/urls`, { json: { parts }, signal })
      .then((r) => r.data.parts);
  }

  // A download link that needs no token (an <a href> cannot send headers):
  // { url, expires_in, expires_at }, url relative to the server.
  link(id, signal) {
    return this.request("GET", `/upload/${id}/link`, { signal }).then((r) => r.data);
  }
}
