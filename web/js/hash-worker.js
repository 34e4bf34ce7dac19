// MD5 off the main thread (classic worker: importScripts loads the vendored
// UMD build, which defines self.hashwasm; its WASM needs 'wasm-unsafe-eval').
//
// The same script plays two roles (hasher.js): a pool of these hashes chunks
// (`chunk`: the `md5` query of each PUT), in any order, and hands each
// chunk's bytes back (transferred, not copied); one more keeps the
// whole-file MD5 (`feed`, then `final`), fed those bytes strictly in index
// order. So every byte is read from the file once and hashed twice, on up to
// as many cores as there are workers. On resume, chunks the server already
// has go through both too, so the whole-file digest still covers every byte.
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
    const buffer = await msg.blob.arrayBuffer();
    perChunk.init();
    perChunk.update(new Uint8Array(buffer));
    return [{ md5: perChunk.digest("hex"), buffer }, [buffer]];
  }
  if (msg.type === "feed") {
    // The whole-file digest is only right if chunks arrive in order; the
    // page guarantees it, this makes a bug loud instead of a silent mismatch.
    if (msg.index !== nextIndex) {
      throw new Error(`chunk ${msg.index} hashed out of order (expected ${nextIndex})`);
    }
    whole.update(new Uint8Array(msg.buffer));
    nextIndex += 1;
    return [{}, []];
  }
  if (msg.type === "final") {
    if (msg.total !== nextIndex) {
      throw new Error(`final digest after ${nextIndex} of ${msg.total} chunks`);
    }
    return [{ md5: whole.digest("hex") }, []];
  }
  throw new Error(`unknown message ${msg.type}`);
}

// onmessage handlers may interleave at every await; chaining them keeps the
// messages strictly in the order they were posted.
let queue = Promise.resolve();
self.onmessage = (event) => {
  const msg = event.data;
  queue = queue.then(() => handle(msg)).then(
    ([result, transfer]) => self.postMessage({ id: msg.id, ok: true, ...result }, transfer),
    (err) => self.postMessage({ id: msg.id, ok: false, error: String(err?.message ?? err) }),
  );
};
