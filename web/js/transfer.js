// One pass over a file's chunks: hash ahead (in index order, as the
// whole-file MD5 needs) and send up to `parallel` chunks at once. Chunks the
// server already has are hashed but not sent, so the whole-file MD5 stays
// right on resume. The first failure stops the whole pass.

import { childController, Notifier } from "./util.js";

// hasher: { hashedCount, hash(i) }; has(i): whether the server has chunk i;
// send(i, signal): sends it; onHashed(): after every hashed chunk.
export async function transferPass({ hasher, total, parallel, has, send, onHashed, signal }) {
  const ctl = childController(signal);
  const local = ctl.signal;
  const wake = new Notifier();
  const queue = [];
  for (let i = 0; i < hasher.hashedCount && i < total; i++) {
    if (!has(i)) queue.push(i);
  }
  let producing = true;

  const producer = async () => {
    try {
      while (hasher.hashedCount < total) {
        const i = hasher.hashedCount;
        while (!has(i) && queue.length >= parallel * 2) await wake.wait(local);
        await hasher.hash(i);
        if (local.aborted) return;
        if (!has(i)) { queue.push(i); wake.notify(); }
        onHashed();
      }
    } finally {
      producing = false;
      wake.notify();
    }
  };
  const sender = async () => {
    while (!local.aborted) {
      const i = queue.shift();
      if (i === undefined) {
        if (!producing) return;
        await wake.wait(local);
        continue;
      }
      wake.notify();   // room for the producer to hash further
      if (!has(i)) await send(i, local);
    }
  };

  let first = null;
  const tasks = [producer(), ...Array.from({ length: parallel }, sender)].map(
    (p) => p.catch((err) => { first ??= err; ctl.abort(); }));
  await Promise.allSettled(tasks);
  if (first) throw first;
  if (signal.aborted) throw new DOMException("aborted", "AbortError");
}
