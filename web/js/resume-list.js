// Unfinished uploads from earlier visits of this browser. Where the file's
// handle was kept (handles.js) the item offers "Resume", which asks the
// browser for read access and goes on with only the missing chunks; else
// the user picks the same file again (which resumes it) or discards it.
// Local records are only hints: those the server no longer has in progress
// are dropped.

import { formatBytes, formatDate, percent, t } from "./i18n.js";
import { readable } from "./handles.js";
import { fingerprint } from "./storage.js";

const LIST_PAGE = 100;  // uploads per GET /uploads page (the server allows up to 1000)

export class ResumeList {
  // onResume(item) adds { file, relativePath, handle } back to the page;
  // onMessage(text) shows why a resume did not happen.
  constructor({ section, list, hint, template, api, store, handles, onDiscarded, onResume,
                onMessage }) {
    Object.assign(this, { section, list, hint, template, api, store, handles, onDiscarded,
                          onResume, onMessage });
    this.entries = new Map();   // fingerprint -> { rec, up, handle }
  }

  async load(isOpen) {
    const records = this.store.list();
    if (!records.length) return;
    let server = null;
    try {
      server = await this.#findOnServer(new Set(records.map((rec) => rec.uploadId)));
    } catch { /* offline: list what we remember, without percentages */ }
    for (const rec of records) {
      if (server && !server.has(rec.uploadId)) { this.store.remove(rec.fingerprint); continue; }
      if (isOpen(rec.fingerprint)) continue;
      const handle = await this.handles.get(rec.fingerprint);
      this.entries.set(rec.fingerprint, { rec, up: server?.get(rec.uploadId) ?? null, handle });
    }
    this.render();
  }

  // The server's state of these uploads: pages of the user's unfinished ones,
  // newest first, until every id is found or the pages end (then the rest
  // are no longer in progress). Only the wanted ones are kept.
  async #findOnServer(wanted) {
    const found = new Map();
    let cursor = null;
    do {
      // Merging too: a merge running while the page reloads still ends well.
      const page = await this.api.listPage("in_progress,merging", { cursor, limit: LIST_PAGE });
      for (const up of page.uploads) if (wanted.has(up.upload_id)) found.set(up.upload_id, up);
      cursor = page.nextCursor;
    } while (cursor && found.size < wanted.size);
    return found;
  }

  // The file was picked again: it now has a card of its own.
  taken(fp) {
    if (this.entries.delete(fp)) this.render();
  }

  render() {
    this.list.replaceChildren(...[...this.entries].map(([fp, entry]) => this.#item(fp, entry)));
    this.section.hidden = this.entries.size === 0;
    const anyHandle = [...this.entries.values()].some((e) => e.handle);
    this.hint.textContent = t(anyHandle ? "resume.hint.handles" : "resume.hint");
  }

  #item(fp, { rec, up, handle }) {
    const li = this.template.content.firstElementChild.cloneNode(true);
    const shown = rec.relativePath || rec.filename;
    const name = li.querySelector(".file-name");
    name.textContent = rec.filename;
    name.title = shown;
    const size = formatBytes(rec.size);
    const parts = [up ? t("resume.progress", { size, pct: percent(up.received.length, up.total_chunks) })
      : size];
    if (rec.savedAt) parts.push(t("resume.started", { date: formatDate(rec.savedAt) }));
    li.querySelector(".file-size").textContent = parts.join(" · ");
    const resume = li.querySelector("[data-action=resume]");
    resume.hidden = !handle;
    resume.setAttribute("aria-label", t("resume.resume.label", { name: shown }));
    resume.addEventListener("click", () => this.#resume(fp, rec, handle));
    const discard = li.querySelector("[data-action=discard]");
    discard.setAttribute("aria-label", t("resume.discard.label", { name: shown }));
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

  async #resume(fp, rec, handle) {
    const name = rec.relativePath || rec.filename;
    let file;
    try {
      if (!await readable(handle)) { this.onMessage(t("resume.denied", { name })); return; }
      file = await handle.getFile();
    } catch {
      this.onMessage(t("resume.denied", { name }));
      return;
    }
    // The same name, size and modification time: the same file as before.
    if (fingerprint(file, rec.relativePath ?? "") !== fp) {
      this.onMessage(t("resume.changed", { name }));
      return;
    }
    this.onResume({ file, relativePath: rec.relativePath ?? "", handle });
  }
}
