// One HTTP exchange, with a stall detector.
//
// XMLHttpRequest rather than fetch: it reports upload progress, and progress
// is what tells a slow chunk that still moves from one that stalled (a dead
// proxy, a half-open connection after a network change) which fetch would
// wait on forever. Any event from the exchange (bytes sent, headers or bytes
// received) rearms the timer; `stallMs` without one aborts the request.

import { abortError } from "./util.js";

export class TransportError extends Error {
  constructor(message, { stalled = false } = {}) {
    super(message);
    this.name = "TransportError";
    this.stalled = stalled;   // aborted by the stall detector, not by a network error
  }
}

// Resolves to { status, statusText, text, header(name) } for every HTTP
// answer (errors included); rejects with TransportError when no answer came,
// with an AbortError when `signal` aborted it.
export function send({ method, url, headers = {}, body = null, signal, stallMs = 0,
                       onUploadProgress }) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(abortError()); return; }
    const xhr = new XMLHttpRequest();
    let timer = 0;
    let stalled = false;
    const arm = () => {
      if (!stallMs) return;
      clearTimeout(timer);
      timer = setTimeout(() => { stalled = true; xhr.abort(); }, stallMs);
    };
    const onAbort = () => xhr.abort();
    const settle = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { arm(); onUploadProgress?.(e.loaded); };
    xhr.onprogress = arm;
    xhr.onreadystatechange = arm;
    xhr.onload = () => {
      settle();
      resolve({
        status: xhr.status, statusText: xhr.statusText, text: xhr.responseText,
        header: (name) => xhr.getResponseHeader(name),
      });
    };
    xhr.onerror = () => { settle(); reject(new TransportError("network error")); };
    xhr.onabort = () => {
      settle();
      reject(stalled ? new TransportError("no progress", { stalled: true }) : abortError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    arm();
    xhr.send(body);
  });
}
