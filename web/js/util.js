// Small async helpers shared by the upload flow.

export function abortError() {
  return new DOMException("aborted", "AbortError");
}

// setTimeout that an AbortSignal cancels (pause/cancel must not wait out a
// 20-second backoff).
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(abortError()); return; }
    const onAbort = () => { clearTimeout(timer); reject(abortError()); };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// Exponential backoff with "equal jitter": half the delay is fixed so retries
// never hammer the server, half is random so many clients that failed at the
// same moment (a server restart) do not come back in lockstep.
export function backoffDelay(attempt, { base = 500, cap = 20000 } = {}) {
  const exp = Math.min(cap, base * 2 ** attempt);
  return exp / 2 + Math.random() * (exp / 2);
}

// A condition variable for async loops: waiters re-check their condition
// after every notify(), so a missed or spurious wake-up is harmless.
export class Notifier {
  constructor() { this.waiters = new Set(); }

  wait(signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) { reject(abortError()); return; }
      const onAbort = () => { this.waiters.delete(done); reject(abortError()); };
      const done = () => { signal?.removeEventListener("abort", onAbort); resolve(); };
      this.waiters.add(done);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  notify() {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }
}

// A controller that also aborts when `parent` does: one failed chunk stops
// its siblings without touching the upload-wide signal.
export function childController(parent) {
  const ctl = new AbortController();
  if (parent.aborted) ctl.abort();
  else parent.addEventListener("abort", () => ctl.abort(), { once: true });
  return ctl;
}

const MiB = 1 << 20;

// settings.chunk_size unless that makes more than max_chunks chunks; then the
// smallest whole number of MiB that fits, within chunk_size_max.
export function chooseChunkSize(size, s) {
  const min = s.chunk_size_min ?? 64 * 1024;
  const max = s.chunk_size_max ?? 64 * MiB;
  const maxChunks = s.max_chunks ?? 10000;
  let cs = Math.min(max, Math.max(min, s.chunk_size ?? 8 * MiB));
  if (Math.ceil(size / cs) > maxChunks) {
    cs = Math.min(max, Math.ceil(size / maxChunks / MiB) * MiB);
  }
  return cs;
}
