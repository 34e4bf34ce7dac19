// Main-thread handle on one hash worker: promise-based, deduplicated per
// chunk, and strictly sequential, so callers may ask for chunk i from
// different (even abandoned) runs of an upload without breaking the order
// the whole-file digest needs.

export class Hasher {
  constructor(file, chunkSize) {
    this.file = file;
    this.chunkSize = chunkSize;
    this.md5s = [];          // per-chunk hex digests, by index
    this.hashedBytes = 0;
    this.next = 0;           // first chunk not yet requested from the worker
    this.pending = new Map();
    this.inflight = new Map();
    this.seq = 0;
    this.finalMd5 = null;
    this.worker = new Worker(new URL("./hash-worker.js", import.meta.url));
    this.worker.onmessage = (e) => this.#settle(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.#failAll(new Error(e.message || "the hashing worker failed to start"));
    };
  }

  get hashedCount() { return this.md5s.length; }

  #call(msg) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  #settle({ id, ok, error, ...rest }) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (ok) p.resolve(rest); else p.reject(new Error(error));
  }

  #failAll(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  // MD5 of chunk `index`; hashes every earlier chunk first if needed.
  hash(index) {
    if (index < this.md5s.length) return Promise.resolve(this.md5s[index]);
    while (this.next <= index) {
      const i = this.next++;
      const start = i * this.chunkSize;
      const blob = this.file.slice(start, Math.min(start + this.chunkSize, this.file.size));
      const p = this.#call({ type: "chunk", index: i, blob }).then(({ md5 }) => {
        this.md5s[i] = md5;
        this.hashedBytes += blob.size;
        this.inflight.delete(i);
        return md5;
      });
      this.inflight.set(i, p);
    }
    return this.inflight.get(index);
  }

  // Whole-file MD5 once all `total` chunks went through hash(). A digest
  // finalises the worker's hasher, so the answer is kept for later calls
  // (complete may be sent again after the server reports missing chunks).
  final(total) {
    this.finalMd5 ??= this.#call({ type: "final", total }).then(({ md5 }) => md5);
    return this.finalMd5;
  }

  close() {
    this.worker.terminate();
    this.#failAll(new Error("hashing stopped"));
  }
}
