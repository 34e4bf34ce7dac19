// One file's upload: open or resume, hash, send the chunks, complete (and
// wait out a merge). No DOM here: the page renders from the public fields
// after every onChange(). Every request goes through the one retry path.

import { ApiError, isAbort } from "./api.js";
import { Hasher } from "./hasher.js";
import { formatBytes, t } from "./i18n.js";
import { describeError, retryNotice, userError } from "./messages.js";
import { retrying } from "./retry.js";
import { fingerprint } from "./storage.js";
import { transferPass } from "./transfer.js";
import { chooseChunkSize, sleep } from "./util.js";

const MAX_COMPLETE_ROUNDS = 3;   // complete → "incomplete" → resend, at most
const SPEED_WINDOW_MS = 8000;

export const ACTIVE = new Set(["hashing", "uploading", "merging"]);
const ACTIVE_SENDING = new Set(["hashing", "uploading"]);   // a merge cannot be paused

// The sentinel thrown from deep inside the transfer when the server says the
// upload is already completed (e.g. finished from another tab).
class Finished extends Error {}

export class FileUpload {
  // sender: sends one chunk (chunk-sender.js); api: every other request;
  // connectivity: where retries wait out an outage (connectivity.js);
  // relativePath: the file's path inside a picked or dropped folder.
  constructor({ file, relativePath = "", api, sender, connectivity = null, store, settings,
                onChange = () => {} }) {
    this.file = file;
    this.relativePath = relativePath;
    this.fp = fingerprint(file, relativePath);
    this.api = api;
    this.sender = sender;
    this.connectivity = connectivity;
    this.store = store;
    this.settings = settings;
    this.onChange = onChange;
    this.parallel = Math.max(1, settings.parallel ?? 4);
    this.chunkSize = chooseChunkSize(file.size, settings);
    this.total = Math.ceil(file.size / this.chunkSize);
    this.state = "queued";
    this.message = "";     // what the user reads under the progress bar
    this.notice = "";      // transient: "retrying in 3 s"
    this.waiting = false;  // past the quick retries: waiting for the server
    this.error = null;
    this.uploadId = null;
    this.direct = false;   // chunks go straight to the object store (upload.direct)
    this.location = null;
    this.md5 = null;       // whole-file MD5, once hashed
    this.verified = null;  // "parts" once completed: checked part by part, not as a whole
    this.resumed = false;
    this.received = new Set();
    this.bytesDone = 0;
    this.sessionBytes = 0; // sent by this page, for the speed
    this.samples = [];
    this.hasher = null;
    this.ctl = null;
    this.syncing = null;
  }

  get size() { return this.file.size; }
  get name() { return this.file.name; }
  get hashedBytes() { return this.hasher?.hashedBytes ?? 0; }

  get canPause() { return this.state === "queued" || ACTIVE_SENDING.has(this.state); }
  get canCancel() { return this.state !== "done" && this.state !== "cancelled"; }

  chunkBytes(i) {
    return Math.min(this.chunkSize, this.size - i * this.chunkSize);
  }

  get speed() {
    if (this.state !== "uploading" || this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const b1 = this.samples[this.samples.length - 1][1];
    const dt = (performance.now() - t0) / 1000;
    return dt > 0.2 ? (b1 - b0) / dt : 0;
  }

  #set(state, message = this.message) {
    this.state = state;
    this.message = message;
    this.onChange(this);
  }

  // ---- controls -------------------------------------------------------------

  start() {
    if (this.ctl) return;
    const max = this.settings.max_file_size;
    if (max && this.size > max) {
      this.#set("failed", t("msg.tooLarge", { size: formatBytes(max) }));
      return;
    }
    this.error = null;
    this.notice = "";
    this.waiting = false;
    this.ctl = new AbortController();
    this.samples = [[performance.now(), this.sessionBytes]];
    const ctl = this.ctl;
    this.#run(ctl.signal).finally(() => { if (this.ctl === ctl) this.ctl = null; });
  }

  pause() {
    if (!this.canPause) return;
    this.#stop();
    this.#set("paused", t("msg.paused"));
  }

  resume() {
    if (this.state === "paused" || this.state === "failed") this.start();
  }

  // Back in the queue, to start when its turn comes (resume all, retry all).
  requeue() {
    if (this.state !== "paused" && this.state !== "failed") return;
    this.error = null;
    this.#set("queued", "");
  }

  async cancel() {
    if (!this.canCancel) return;
    this.#stop();
    this.hasher?.close();
    this.hasher = null;
    this.store.remove(this.fp);
    this.#set("cancelled", t("msg.cancelled"));
    if (!this.uploadId) return;
    try {
      await retrying(() => this.api.remove(this.uploadId),
                     { policy: this.settings.retry, quickOnly: true });
    } catch (err) {
      if (err.code !== "not_found") {
        this.#set("cancelled", t("msg.cancelledLocally"));
      }
    }
  }

  #stop() {
    this.ctl?.abort();
    this.ctl = null;
    this.notice = "";
    this.waiting = false;
  }

  // ---- the run ----------------------------------------------------------------

  async #run(signal) {
    try {
      this.#set("hashing", t("msg.preparing"));
      if (this.uploadId) await this.#retrying(() => this.#sync(signal, { merge: false }), signal);
      else await this.#open(signal);
      this.hasher ??= new Hasher(this.file, this.chunkSize,
                                 { workers: this.settings.hash_workers });
      for (let round = 1; ; round++) {
        await this.#transfer(signal);
        if (await this.#complete(signal)) break;
        if (round >= MAX_COMPLETE_ROUNDS) {
          throw userError(t("err.missing"));
        }
      }
    } catch (err) {
      if (err instanceof Finished) return;
      if (signal.aborted || isAbort(err)) return;   // paused or cancelled
      this.#fail(err);
    }
  }

  // The retry path of retry.js, telling the user while it waits.
  async #retrying(call, signal) {
    const out = await retrying(call, {
      signal, connectivity: this.connectivity, policy: this.settings.retry,
      onRetry: (err, ms) => { this.notice = retryNotice(err, ms); this.onChange(this); },
      onWaiting: () => {
        if (this.waiting) return;
        this.waiting = true;
        this.notice = "";
        this.onChange(this);
      },
    });
    if (this.notice || this.waiting) {
      // Speed is measured again from here: the outage moved no bytes.
      if (this.waiting) this.samples = [[performance.now(), this.sessionBytes]];
      this.notice = "";
      this.waiting = false;
      this.onChange(this);
    }
    return out;
  }

  // Resume from a record of an earlier page (same fingerprint) when the
  // server still has that upload; otherwise start a new one.
  async #open(signal) {
    const rec = this.store.get(this.fp);
    if (rec?.uploadId) {
      try {
        const up = await this.#retrying(() => this.api.status(rec.uploadId, signal), signal);
        if (up.size === this.size && up.status !== "aborted" && up.status !== "failed") {
          this.resumed = true;
          this.#adopt(up);
          return;
        }
      } catch (err) {
        if (err.code !== "not_found") throw err;  // expired or removed: start over
      }
      this.store.remove(this.fp);
    }
    // A folder's relative path travels as metadata where the server takes
    // it; the page's own resume record keeps it either way.
    const metadata = this.relativePath && this.settings.accepts_metadata
      ? { relative_path: this.relativePath } : undefined;
    const up = await this.#retrying(() => this.api.init(
      { filename: this.name, size: this.size, chunkSize: this.chunkSize, metadata }, signal),
                                    signal);
    this.#adopt(up);
    this.store.set(this.fp, {
      uploadId: this.uploadId, filename: this.name, relativePath: this.relativePath,
      size: this.size, lastModified: this.file.lastModified, chunkSize: this.chunkSize,
      savedAt: Date.now(),
    });
  }

  // Take the server's view of the upload. `merge` keeps chunks this page saw
  // acknowledged while the status request was on its way (the server never
  // loses an acknowledged chunk of a live upload); after an `incomplete`
  // answer the server's list replaces ours.
  #adopt(up, { merge = false } = {}) {
    this.uploadId = up.upload_id;
    this.direct = up.direct === true;
    if (up.chunk_size !== this.chunkSize) {
      this.chunkSize = up.chunk_size;
      this.hasher?.close();
      this.hasher = null;
    }
    this.total = up.total_chunks;
    const known = merge ? this.received : [];
    this.received = new Set([...(up.received ?? []), ...known]);
    this.bytesDone = 0;
    for (const i of this.received) this.bytesDone += this.chunkBytes(i);
    if (up.status === "completed") {
      this.#finish(up);
      throw new Finished();
    }
    if (up.status === "aborted" || up.status === "failed") {
      this.#forget();
      throw userError(t("err.aborted"));
    }
    this.onChange(this);
  }

  // GET status and adopt it; shared by every sender that wants it at once.
  #sync(signal, { merge = true } = {}) {
    this.syncing ??= (async () => {
      try {
        this.#adopt(await this.api.status(this.uploadId, signal), { merge });
      } catch (err) {
        if (err.code === "not_found") {
          this.#forget();
          throw userError(t("err.gone"));
        }
        throw err;
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  async #transfer(signal) {
    const hasher = this.hasher;
    const pending = hasher.md5s.some((md5, i) => md5 && i < this.total && !this.received.has(i));
    if (!pending) this.#set("hashing", t(this.resumed ? "msg.checking" : "msg.hashing"));
    await transferPass({
      hasher, total: this.total, parallel: this.parallel, signal,
      has: (i) => this.received.has(i),
      send: (i, local) => this.#sendChunk(i, local),
      onHashed: () => this.onChange(this),
    });
  }

  async #sendChunk(i, signal) {
    const start = i * this.chunkSize;
    const blob = this.file.slice(start, start + this.chunkBytes(i));
    const md5 = this.hasher.md5s[i];
    try {
      await this.#retrying(async (attempt) => {
        // After a failure the chunk may have landed anyway, or the upload
        // may have moved on (merged, removed): ask before sending again.
        if (attempt > 0) {
          await this.#sync(signal);
          if (this.received.has(i)) return;
        }
        if (this.state !== "uploading") this.#set("uploading", t("msg.uploading"));
        await this.sender.send({ uploadId: this.uploadId, index: i, blob, md5, signal,
                                 direct: this.direct, ahead: () => this.#waitingAfter(i) });
        if (!this.received.has(i)) {
          this.received.add(i);
          this.bytesDone += blob.size;
          this.sessionBytes += blob.size;
          this.#sample();
        }
        this.onChange(this);
      }, signal);
    } catch (err) {
      if (err instanceof Finished || isAbort(err) || signal.aborted) throw err;
      throw describeError(err, i);
    }
  }

  // Chunks after i hashed and not yet acknowledged: a direct upload asks for
  // their URLs along with chunk i's.
  #waitingAfter(i) {
    const md5s = this.hasher?.md5s ?? [];
    const out = [];
    for (let j = i + 1; j < md5s.length && out.length < 64; j++) {
      if (md5s[j] && !this.received.has(j)) out.push({ index: j, md5: md5s[j] });
    }
    return out;
  }

  // POST complete; true when done, false when chunks turned out missing.
  async #complete(signal) {
    if (!this.hasher.finalMd5) this.#set("hashing", t("msg.final"));
    const md5 = await this.hasher.final(this.total);
    this.md5 = md5;
    this.#set("merging", t("msg.merging"));
    const waitMs = (this.settings.merge_wait_seconds ?? 20) * 1000;
    let res;
    try {
      res = await this.#retrying(() => this.api.complete(this.uploadId, md5, signal, { waitMs }),
                                 signal);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw err;
      if (err.code !== "incomplete") throw describeError(err);
      // The server's `received` says what to send again.
      await this.#retrying(() => this.#sync(signal, { merge: false }), signal);
      return false;
    }
    let up = res.data;
    let delay = 300;
    // 202: the merge goes on in the background; its outcome shows in status.
    while (up.status === "merging") {
      await sleep(delay, signal);
      delay = Math.min(delay * 1.5, 3000);
      up = await this.#retrying(() => this.api.status(this.uploadId, signal), signal);
    }
    if (up.status === "completed") {
      this.#finish(up);
      return true;
    }
    if (up.error) {
      const { code = "", message = "merge failed", retryable = false, ...details } = up.error;
      throw describeError(new ApiError(message, { code, details, retryable }));
    }
    this.#adopt(up);
    return false;
  }

  #sample() {
    const now = performance.now();
    this.samples.push([now, this.sessionBytes]);
    while (this.samples.length > 2 && now - this.samples[1][0] > SPEED_WINDOW_MS) this.samples.shift();
  }

  #finish(up) {
    this.location = up.location ?? `/files/${this.uploadId}`;
    this.verified = up.verified ?? null;   // "parts": the file's MD5 was not checked
    this.bytesDone = this.size;
    this.notice = "";
    this.waiting = false;
    this.store.remove(this.fp);
    this.hasher?.close();
    this.hasher = null;
    this.#set("done", t(this.resumed ? "msg.doneResumed" : "msg.done"));
  }

  #forget() {
    this.store.remove(this.fp);
    this.uploadId = null;
    this.received = new Set();
    this.bytesDone = 0;
  }

  #fail(err) {
    this.error = err;
    this.notice = "";
    this.waiting = false;
    // A hashing failure leaves the worker's running digest unusable.
    if (!(err instanceof ApiError)) { this.hasher?.close(); this.hasher = null; }
    this.#set("failed", describeError(err).message);
  }
}
