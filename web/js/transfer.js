// One pass over a file's chunks: hash ahead of the network (on the hasher's
// pool, several chunks at once) and send up to `parallel` chunks at once,
// lowest index first. Chunks the server already has are hashed but not sent,
// so the whole-file MD5 stays right on resume. The first failure stops the
// whole pass.

import { childController, Notifier } from "./util.js";

// hasher: hasher.js; has(i): whether the server has chunk i; send(i,
// signal): sends it; onHashed(): after every hashed chunk. `ahead` bounds
// the read-ahead: chunks hashed or hashing but not yet sent, and chunk bytes
// held for the whole-file digest (ahead x chunk size of memory at most).
export async function transferPass({ hasher, total, parallel, ahead = 2 * parallel, has, send,
                                     onHashed, signal }) {
  const ctl = childController(signal);
  const local = ctl.signal;
  const wake = new Notifier();
  const stopListening = hasher.listen(() => wake.notify());
  const ready = [];   // hashed, not on the server, not yet taken: ascending
  for (let i = 0; i < total; i++) {
    if (hasher.md5s[i] && !has(i)) ready.push(i);
  }
  let hashing = 0;
  let producing = true;
  let first = null;
  const fail = (err) => { first ??= err; ctl.abort(); };

  const take = (i) => {
    // Sorted insert: chunks finish out of order, the server folds in order.
    let at = ready.length;
    while (at > 0 && ready[at - 1] > i) at--;
    ready.splice(at, 0, i);
  };

  const producer = async () => {
    try {
      for (let i = 0; i < total; i++) {
        if (hasher.md5s[i]) continue;
        while (ready.length + hashing >= ahead || i >= hasher.fedCount + ahead) {
          if (hasher.error) throw hasher.error;
          await wake.wait(local);
        }
        hashing++;
        hasher.hash(i).then(() => {
          hashing--;
          if (!has(i)) take(i);
          onHashed();
          wake.notify();
        }, (err) => { hashing--; fail(err); wake.notify(); });
      }
      while (hashing > 0) await wake.wait(local);
    } finally {
      producing = false;
      wake.notify();
    }
  };
  const sender = async () => {
    while (!local.aborted) {
      const i = ready.shift();
      if (i === undefined) {
        if (!producing) return;
        await wake.wait(local);
        continue;
      }
      wake.notify();   // room for the producer to hash further
      if (!has(i)) await send(i, local);
    }
  };

  try {
    const tasks = [producer(), ...Array.from({ length: parallel }, sender)].map(
      (p) => p.catch(fail));
    await Promise.allSettled(tasks);
  } finally {
    stopListening();
  }
  if (first) throw first;
  if (signal.aborted) throw new DOMException("aborted", "AbortError");
}
