// Thumbnails for image files, made by one shared worker (thumb-worker.js)
// so decoding a large photo never blocks the page. Resolves to an object
// URL, or null for files that are not images the browser can decode.

const MAX_BYTES = 64 * 1000 * 1000;   // decoding more would cost too much memory

export class Thumbnails {
  constructor() {
    this.worker = null;
    this.pending = new Map();
    this.seq = 0;
  }

  make(file) {
    if (!file.type.startsWith("image/") || file.size === 0 || file.size > MAX_BYTES
        || typeof OffscreenCanvas === "undefined") {
      return Promise.resolve(null);
    }
    if (!this.worker) {
      this.worker = new Worker(new URL("./thumb-worker.js", import.meta.url));
      this.worker.onmessage = ({ data: { id, blob } }) => {
        this.pending.get(id)?.(blob ? URL.createObjectURL(blob) : null);
        this.pending.delete(id);
      };
    }
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({ id, file });
    });
  }
}
