// Presigned part URLs of one direct upload (docs/s3.md), asked for in
// batches: the chunk a sender needs now plus the chunks hashed and waiting,
// so one request serves several chunks ahead of need. Each URL is used only
// before the `expires_in` the server gave with it runs out (with a margin
// for a slow start of the PUT), then signed anew; a URL the store refused
// (403: expired, clocks apart) is dropped. One request at a time per
// upload: a sender whose chunk is in the batch being fetched waits for it.

export const URL_BATCH = 16;   // parts per request (the server takes up to 100)

export class PartUrls {
  constructor(api, uploadId) {
    this.api = api;
    this.uploadId = uploadId;
    this.cache = new Map();    // index -> { md5, until, part }
    this.fetching = null;      // the batch request in flight
  }

  #fresh(index, md5) {
    const hit = this.cache.get(index);
    return hit && hit.md5 === md5 && performance.now() < hit.until ? hit.part : null;
  }

  // The signed part { url, method, headers, ... } for chunk `index` whose
  // bytes hash to `md5`; ahead() lists { index, md5 } of chunks waiting.
  async get(index, md5, ahead, signal) {
    for (;;) {
      const hit = this.#fresh(index, md5);
      if (hit) return hit;
      if (this.fetching) {
        // Another sender's batch (it may hold ours); its failure is its own.
        await this.fetching.catch(() => {});
        continue;
      }
      const want = [{ index, md5 }];
      for (const p of ahead()) {
        if (want.length >= URL_BATCH) break;
        if (p.index !== index && !this.#fresh(p.index, p.md5)) want.push(p);
      }
      this.fetching = this.#fetch(want, signal).finally(() => { this.fetching = null; });
      await this.fetching;
    }
  }

  async #fetch(want, signal) {
    const asked = performance.now();
    const parts = await this.api.partUrls(this.uploadId, want, signal);
    const md5s = new Map(want.map((p) => [p.index, p.md5]));
    for (const part of parts) {
      const life = part.expires_in * 1000;
      this.cache.set(part.index, { md5: md5s.get(part.index), part,
                                   until: asked + life - Math.min(30_000, life / 4) });
    }
  }

  // After a 403: the store will not take this URL again.
  drop(index) { this.cache.delete(index); }

  // After a success: the URL is not needed any more.
  forget(index) { this.cache.delete(index); }
}
