// MD5 off the main thread (classic worker: importScripts loads the vendored
// UMD build, which defines self.hashwasm; its WASM needs 'wasm-unsafe-eval').
//
// One worker per file. It keeps two hashers: one restarted for every chunk
// (the `md5` query of each PUT) and one fed every chunk in index order (the
// whole-file MD5 sent at complete). On resume, chunks the server already has
// are hashed here too, without being uploaded, so the whole-file digest still
// covers every byte.
/* global hashwasm */
importScripts("../vendor/hash-wasm/md5.umd.min.js");

let whole = null;
let perChunk = null;
let nextIndex = 0;

const ready = Promise.all([hashwasm.createMD5(), hashwasm.createMD5()]).then(([a, b]) => {
  whole = a;
  perChunk = b;
  whole.init();
});

async function handle(msg) {
  await ready;
  if (msg.type === "chunk") {
    // The whole-file digest is only right if chunks arrive in order; the
    // page guarantees it, this makes a bug loud instead of a silent mismatch.
    if (msg.index !== nextIndex) {
      throw new Error(`chunk ${msg.index} hashed out of order (expected ${nextIndex})`);
    }
    const bytes = new Uint8Array(await msg.blob.arrayBuffer());
    perChunk.init();
    perChunk.update(bytes);
    const md5 = perChunk.digest("hex");
    whole.update(bytes);
    nextIndex += 1;
    return { md5 };
  }
  if (msg.type === "final") {
    if (msg.total !== nextIndex) {
      throw new Error(`final digest after ${nextIndex} of ${msg.total} chunks`);
    }
    return { md5: whole.digest("hex") };
  }
  throw new Error(`unknown message ${msg.type}`);
}

// onmessage handlers may interleave at every await; chaining them keeps the
// chunks strictly in the order they were posted.
let queue = Promise.resolve();
self.onmessage = (event) => {
  const msg = event.data;
  queue = queue.then(() => handle(msg)).then(
    (result) => self.postMessage({ id: msg.id, ok: true, ...result }),
    (err) => self.postMessage({ id: msg.id, ok: false, error: String(err?.message ?? err) }),
  );
};
