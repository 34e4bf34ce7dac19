// Main-thread handle on the hash workers (hash-worker.js): a small pool
// hashes chunks for their own MD5s in any order and on as many cores as
// there are workers; each chunk's bytes come back transferred and go on to one
// more worker, strictly in index order, for the whole-file MD5. Requests are
// deduplicated per chunk, so callers may ask for chunk i from different
// (even abandoned) runs of an upload without breaking that order.

// One worker, promise-based.
class WorkerClient {
  constructor(url) {
    this.pending = new Map();
    this.seq = 0;
    this.worker = new Worker(url);
    this.worker.onmessage = (e) => this.#settle(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.fail(new Error(e.message || "the hashing worker failed to start"));
    };
  }

  get load() { return this.pending.size; }

  call(msg, transfer = []) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  #settle({ id, ok, error, ...rest }) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (ok) p.resolve(rest); else p.reject(new Error(error));
  }

  fail(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  close(err) {
    this.worker.terminate();
    this.fail(err);
  }
}

export class Hasher {
  // workers: the pool's size (config page.hash_workers).
  constructor(file, chunkSize, { workers = 2 } = {}) {
    this.file = file;
    this.chunkSize = chunkSize;
    this.md5s = [];          // per-chunk hex digests, by index (sparse while hashing)
    this.hashedCount = 0;    // how many of md5s are known
    this.hashedBytes = 0;
    this.fedCount = 0;       // chunks the whole-file digest has taken in
    this.finalMd5 = null;
    this.error = null;       // the whole-file worker failed: this hasher is done
    this.inflight = new Map();
    this.waiting = new Map();   // hashed chunks' bytes waiting for their turn
    this.nextFeed = 0;
    this.listeners = new Set();
    const url = new URL("./hash-worker.js", import.meta.url);
    this.pool = Array.from({ length: Math.max(1, workers) }, () => new WorkerClient(url));
    this.whole = new WorkerClient(url);
  }

  // fn() after every chunk hashed or taken in by the whole-file digest;
  // returns the function that stops it.
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  #changed() {
    for (const fn of this.listeners) fn();
  }

  // MD5 of chunk `index`, on the least busy worker of the pool.
  hash(index) {
    if (this.md5s[index]) return Promise.resolve(this.md5s[index]);
    let p = this.inflight.get(index);
    if (p) return p;
    const start = index * this.chunkSize;
    const blob = this.file.slice(start, Math.min(start + this.chunkSize, this.file.size));
    const worker = this.pool.reduce((a, b) => (b.load < a.load ? b : a));
    p = worker.call({ type: "chunk", index, blob }).then(({ md5, buffer }) => {
      this.inflight.delete(index);
      this.md5s[index] = md5;
      this.hashedCount += 1;
      this.hashedBytes += blob.size;
      this.waiting.set(index, buffer);
      this.#feed();
      this.#changed();
      return md5;
    }, (err) => {
      this.inflight.delete(index);
      throw err;
    });
    this.inflight.set(index, p);
    return p;
  }

  // Hands the whole-file worker every chunk whose predecessors it has had.
  #feed() {
    while (this.waiting.has(this.nextFeed)) {
      const index = this.nextFeed++;
      const buffer = this.waiting.get(index);
      this.waiting.delete(index);
      this.whole.call({ type: "feed", index, buffer }, [buffer]).then(() => {
        this.fedCount += 1;
        this.#changed();
      }, (err) => {
        // A pass waiting for room behind the digest must not wait forever.
        this.error ??= err;
        this.#changed();
      });
    }
  }

  // Whole-file MD5 of `total` chunks, every one hashed first if not yet. A
  // digest finalises the worker's hasher, so the answer is kept for later
  // calls (complete may be sent again after the server reports missing chunks).
  final(total) {
    this.finalMd5 ??= Promise.all(Array.from({ length: total }, (_, i) => this.hash(i)))
      // Every feed was posted before its hash() settled: `final` comes after them.
      .then(() => this.whole.call({ type: "final", total }))
      .then(({ md5 }) => md5);
    return this.finalMd5;
  }

  close() {
    const err = new Error("hashing stopped");
    for (const w of [...this.pool, this.whole]) w.close(err);
    this.waiting.clear();
    this.listeners.clear();
  }
}
