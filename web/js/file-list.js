// The cards of this page's uploads, the overall summary with its bulk
// actions, rendered in batches (one per animation frame), plus what is said
// to screen readers when a file changes state or the whole crosses a quarter.

import { t } from "./i18n.js";
import { Card, renderOverall, stateLabel } from "./ui.js";

// Progress alone re-renders at most this often: a 1 GiB upload changes
// hundreds of times, and each render is a frame of style, layout and paint
// on the thread that also drives the upload.
const PROGRESS_MS = 100;

export class FileListView {
  // onAction(action, upload, event) runs a card's button; onBulk(action)
  // one of the overall panel's.
  constructor({ list, template, overall, queue, announce, thumbnails, onAction, onBulk }) {
    Object.assign(this, { list, template, overall, queue, announce, thumbnails });
    this.cards = new Map();   // upload -> Card
    this.dirty = new Set();
    this.frame = 0;
    this.timer = 0;
    this.lastRender = -Infinity;
    this.lastQuarter = -1;
    list.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-action]");
      const card = button?.closest(".card")?.card;
      if (!card) return;
      if (await onAction(button.dataset.action, card.upload, event)) {
        card.render();
        card.focusFirstAction();
      }
    });
    for (const b of overall.bulk) {
      b.addEventListener("click", async () => {
        await onBulk(b.dataset.bulk);
        this.schedule();
      });
    }
    // Speed and time left change while nothing else happens.
    setInterval(() => {
      const busy = queue.uploads.filter((u) => u.state === "uploading");
      if (busy.length) { busy.forEach((u) => this.dirty.add(u)); this.schedule(); }
    }, 1000);
  }

  add(upload) {
    const card = new Card(upload, this.template);
    this.cards.set(upload, card);
    this.list.append(card.el);
    this.schedule(upload);
    this.thumbnails.make(upload.file).then((url) => {
      if (url && this.cards.get(upload) === card) card.showThumbnail(url);
      else if (url) URL.revokeObjectURL(url);
    });
  }

  remove(upload) {
    const card = this.cards.get(upload);
    if (card?.thumb.src.startsWith("blob:")) URL.revokeObjectURL(card.thumb.src);
    card?.el.remove();
    this.cards.delete(upload);
    this.dirty.delete(upload);
    this.schedule();
  }

  changed(upload, previous) {
    if (previous !== undefined && previous !== upload.state) {
      this.#announceState(upload);
      this.schedule(upload);
    } else {
      this.#progress(upload);
    }
  }

  // A change of progress only: rendered with the next frame at least
  // PROGRESS_MS after the last one.
  #progress(upload) {
    this.dirty.add(upload);
    if (this.frame || this.timer) return;
    const wait = this.lastRender + PROGRESS_MS - performance.now();
    if (wait <= 0) this.schedule();
    else this.timer = setTimeout(() => { this.timer = 0; this.schedule(); }, wait);
  }

  schedule(upload) {
    if (upload) this.dirty.add(upload);
    this.frame ||= requestAnimationFrame(() => this.#render());
  }

  #render() {
    this.frame = 0;
    this.lastRender = performance.now();
    for (const u of this.dirty) this.cards.get(u)?.render();
    this.dirty.clear();
    const overall = renderOverall(this.queue.uploads, this.overall);
    if (overall && overall.finished < overall.total) {
      const quarter = Math.floor(overall.pct / 25);
      if (quarter > this.lastQuarter && quarter > 0 && quarter < 4) {
        this.announce(t("overall.progress", { pct: overall.pct }));
      }
      this.lastQuarter = quarter;
    }
  }

  #announceState(u) {
    if (u.state === "failed") this.announce(t("announce.failed", { name: u.name, message: u.message }));
    else if (u.state === "done") this.announce(t("announce.done", { name: u.name }));
    else if (u.state !== "hashing") {
      this.announce(t("announce.state", { name: u.name, state: stateLabel(u).toLowerCase() }));
    }
  }
}
