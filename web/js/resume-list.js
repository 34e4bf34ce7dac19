// Unfinished uploads from earlier visits of this browser, listed so the
// user knows to pick the same file again (which resumes it) or can discard
// them. Local records are only hints: those the server no longer has in
// progress are dropped.

import { formatBytes, percent } from "./format.js";

export class ResumeList {
  constructor({ section, list, template, api, store, onDiscarded }) {
    Object.assign(this, { section, list, template, api, store, onDiscarded });
    this.entries = new Map();   // fingerprint -> { rec, up }
  }

  async load(isOpen) {
    const records = this.store.list();
    if (!records.length) return;
    let server = null;
    try {
      server = new Map((await this.api.list("in_progress")).map((u) => [u.upload_id, u]));
    } catch { /* offline: list what we remember, without percentages */ }
    for (const rec of records) {
      if (server && !server.has(rec.uploadId)) { this.store.remove(rec.fingerprint); continue; }
      if (isOpen(rec.fingerprint)) continue;
      this.entries.set(rec.fingerprint, { rec, up: server?.get(rec.uploadId) ?? null });
    }
    this.render();
  }

  // The file was picked again: it now has a card of its own.
  taken(fp) {
    if (this.entries.delete(fp)) this.render();
  }

  render() {
    this.list.replaceChildren(...[...this.entries].map(([fp, entry]) => this.#item(fp, entry)));
    this.section.hidden = this.entries.size === 0;
  }

  #item(fp, { rec, up }) {
    const li = this.template.content.firstElementChild.cloneNode(true);
    const name = li.querySelector(".file-name");
    name.textContent = rec.filename;
    name.title = rec.filename;
    const pct = up ? percent(up.received.length, up.total_chunks) : null;
    li.querySelector(".file-size").textContent = formatBytes(rec.size)
      + (pct === null ? "" : ` · ${pct}% uploaded`);
    const discard = li.querySelector("[data-action=discard]");
    discard.setAttribute("aria-label", `Discard the unfinished upload of ${rec.filename}`);
    discard.addEventListener("click", async () => {
      this.entries.delete(fp);
      this.store.remove(fp);
      this.render();
      this.onDiscarded();
      try { await this.api.remove(rec.uploadId); } catch { /* expires on its own */ }
    });
    li.dataset.uploadId = rec.uploadId;
    return li;
  }
}
