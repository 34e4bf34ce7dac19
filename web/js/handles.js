// File System Access handles kept in IndexedDB (Chromium), keyed by the
// resume record's fingerprint: after a reload an unfinished upload can read
// its file again once the user allows it, without picking it. Browsers
// without the API (or without IndexedDB) get a store that keeps nothing,
// and the page falls back to "pick the same file again".

const DB = "uploader";
const STORE = "handles";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

class IdbHandles {
  constructor() { this.db = open(); }

  async #run(mode, fn) {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  put(fp, handle) { return this.#run("readwrite", (s) => s.put(handle, fp)).catch(() => {}); }
  get(fp) { return this.#run("readonly", (s) => s.get(fp)).catch(() => null); }
  delete(fp) { return this.#run("readwrite", (s) => s.delete(fp)).catch(() => {}); }
}

class NoHandles {
  put() { return Promise.resolve(); }
  get() { return Promise.resolve(null); }
  delete() { return Promise.resolve(); }
}

export function createHandleStore() {
  const supported = typeof indexedDB !== "undefined" && "FileSystemFileHandle" in window;
  return supported ? new IdbHandles() : new NoHandles();
}

// Read access to a stored handle, asking the user if needed (the call must
// come from a click: requestPermission needs a user gesture).
export async function readable(handle) {
  const opts = { mode: "read" };
  if (await handle.queryPermission?.(opts) === "granted") return true;
  return (await handle.requestPermission?.(opts)) === "granted";
}
