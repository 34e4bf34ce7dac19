// Waiting out an outage. After the fast retries an upload waits here: a
// capped backoff that ends early when the browser says the network is back
// (`online`), when the tab becomes visible again (timers are throttled in
// background tabs), or, when the server could not be reached at all, as soon
// as a cheap probe (GET /healthz) answers. A page never gives up on a server
// that may come back; the user can still pause or cancel.

import { abortError } from "./util.js";

export class Connectivity {
  constructor({ probeUrl = "/healthz", probeMs = 5000 } = {}) {
    this.probeUrl = probeUrl;
    this.probeMs = probeMs;
    this.waiters = new Set();   // { wake, probe }
    this.probing = false;
    const wakeAll = () => this.#wake(() => true);
    window.addEventListener("online", wakeAll);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") wakeAll();
    });
  }

  // Resolves after `ms`, or earlier on a sign that the server is back;
  // `probe`: the server gave no answer at all, so /healthz answering is news.
  wait(ms, signal, { probe = false } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) { reject(abortError()); return; }
      const waiter = { probe, wake: () => finish(resolve) };
      const timer = setTimeout(() => finish(resolve), ms);
      const onAbort = () => finish(() => reject(abortError()));
      const finish = (settle) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.waiters.delete(waiter);
        settle();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
      if (probe) this.#probeLoop();
    });
  }

  #wake(which) {
    for (const w of [...this.waiters]) if (which(w)) w.wake();
  }

  async #probeLoop() {
    if (this.probing) return;
    this.probing = true;
    try {
      while ([...this.waiters].some((w) => w.probe)) {
        await new Promise((r) => setTimeout(r, this.probeMs));
        if (await this.#reachable()) this.#wake((w) => w.probe);
      }
    } finally {
      this.probing = false;
    }
  }

  async #reachable() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.probeMs);
    try {
      const resp = await fetch(this.probeUrl, { cache: "no-store", signal: ctl.signal });
      return resp.ok;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}
