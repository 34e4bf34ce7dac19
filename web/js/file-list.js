// The cards of this page's uploads and the overall summary, rendered in
// batches (one per animation frame), plus what is said to screen readers
// when a file changes state or the whole crosses a quarter.

import { Card, renderOverall, STATE_LABEL } from "./ui.js";

export class FileListView {
  // onAction(action, upload, event) runs a card's button.
  constructor({ list, template, overall, queue, announce, onAction }) {
    Object.assign(this, { list, template, overall, queue, announce });
    this.cards = new Map();   // upload -> Card
    this.dirty = new Set();
    this.frame = 0;
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
  }

  remove(upload) {
    this.cards.get(upload)?.el.remove();
    this.cards.delete(upload);
    this.dirty.delete(upload);
    this.schedule();
  }

  changed(upload, previous) {
    if (previous !== undefined && previous !== upload.state) this.#announceState(upload);
    this.schedule(upload);
  }

  schedule(upload) {
    if (upload) this.dirty.add(upload);
    this.frame ||= requestAnimationFrame(() => this.#render());
  }

  #render() {
    this.frame = 0;
    for (const u of this.dirty) this.cards.get(u)?.render();
    this.dirty.clear();
    const overall = renderOverall(this.queue.uploads, this.overall);
    if (overall && overall.finished < overall.total) {
      const quarter = Math.floor(overall.pct / 25);
      if (quarter > this.lastQuarter && quarter > 0 && quarter < 4) {
        this.announce(`Overall progress ${overall.pct}%`);
      }
      this.lastQuarter = quarter;
    }
  }

  #announceState(u) {
    const label = STATE_LABEL[u.state] ?? u.state;
    if (u.state === "failed") this.announce(`${u.name}: failed. ${u.message}`);
    else if (u.state === "done") this.announce(`${u.name}: upload complete`);
    else if (u.state !== "hashing") this.announce(`${u.name}: ${label.toLowerCase()}`);
  }
}
