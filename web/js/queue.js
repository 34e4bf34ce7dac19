// The files of this page and who runs next: at most MAX_ACTIVE files upload
// at once, the others wait their turn in the order they were added.

import { ACTIVE, FileUpload } from "./upload.js";

// Each file already runs `parallel` chunk PUTs and browsers allow only ~6
// connections per host over HTTP/1.1.
const MAX_ACTIVE = 2;

export class UploadQueue {
  // onChange(upload, previousState) after every change of any upload.
  constructor({ api, sender, connectivity, store, settings, onChange }) {
    this.deps = { api, sender, connectivity, store, settings };
    this.onChange = onChange;
    this.uploads = [];
  }

  find(fp) {
    return this.uploads.find((u) => u.fp === fp && u.state !== "done" && u.state !== "cancelled");
  }

  // Adds a file unless it is already being uploaded; returns the upload or null.
  add(file, relativePath = "") {
    const upload = new FileUpload({ file, relativePath, ...this.deps,
                                    onChange: (u) => this.#changed(u) });
    if (this.find(upload.fp)) return null;
    upload.lastState = upload.state;
    this.uploads.push(upload);
    return upload;
  }

  remove(upload) {
    const i = this.uploads.indexOf(upload);
    if (i >= 0) this.uploads.splice(i, 1);
  }

  #changed(upload) {
    const previous = upload.lastState;
    upload.lastState = upload.state;
    this.onChange(upload, previous);
    if (previous !== upload.state && !ACTIVE.has(upload.state)) this.pump();
  }

  pump() {
    let active = this.uploads.filter((u) => ACTIVE.has(u.state)).length;
    for (const u of this.uploads) {
      if (active >= MAX_ACTIVE) break;
      if (u.state === "queued") { u.start(); active++; }
    }
  }
}
