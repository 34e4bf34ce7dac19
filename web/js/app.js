// The upload page: reads the server's settings and wires the parts
// together. Each part keeps its own state: the queue (queue.js), the cards
// (file-list.js), the drop zone (dropzone.js), the unfinished uploads of
// earlier visits (resume-list.js); this file holds none.

import { Api } from "./api.js";
import { createAnnouncer } from "./announcer.js";
import { createAuth } from "./auth.js";
import { serverChunkSender } from "./chunk-sender.js";
import { createDropZone } from "./dropzone.js";
import { FileListView } from "./file-list.js";
import { formatBytes } from "./format.js";
import { UploadQueue } from "./queue.js";
import { ResumeList } from "./resume-list.js";
import { createResumeStore, createTokenStore } from "./storage.js";

const DEFAULTS = {
  chunk_size: 8 << 20, chunk_size_min: 64 << 10, chunk_size_max: 64 << 20,
  parallel: 4, max_file_size: 50 * 2 ** 30, auth_required: false, version: "",
  // A request that makes no progress for this long is aborted and retried.
  stall_timeout: 30, merge_wait_seconds: 20,
};

const $ = (id) => document.getElementById(id);

function readSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse($("settings").textContent) };
  } catch {
    return { ...DEFAULTS };
  }
}

function main() {
  const settings = readSettings();
  const store = createResumeStore();
  const auth = settings.auth_required ? createAuth(createTokenStore(), $("token-dialog")) : null;
  const api = new Api({ auth, stallMs: settings.stall_timeout * 1000 });
  const announce = createAnnouncer($("live"));
  const focusPicker = () => $("choose-button").focus();

  const queue = new UploadQueue({
    api, sender: serverChunkSender(api), store, settings,
    onChange: (upload, previous) => view.changed(upload, previous),
  });
  const view = new FileListView({
    list: $("file-list"), template: $("file-card-template"), queue, announce,
    overall: { section: $("overall"), text: $("overall-text"), bar: $("overall-bar") },
    onAction: (action, upload, event) => runAction(action, upload, event),
  });
  const resumable = new ResumeList({
    section: $("resumable"), list: $("resumable-list"), template: $("resumable-template"),
    api, store, onDiscarded: focusPicker,
  });

  function addFiles(files) {
    const added = [];
    for (const file of files) {
      const upload = queue.add(file);
      if (!upload) {
        announce(`${file.name} is already in the list`);
        continue;
      }
      view.add(upload);
      resumable.taken(upload.fp);
      added.push(file.name);
    }
    if (added.length) announce(`Added ${added.length === 1 ? added[0] : `${added.length} files`}`);
    queue.pump();
  }

  // A card's button; true when the card should re-render and keep focus.
  async function runAction(action, u, event) {
    switch (action) {
      case "pause": u.pause(); return true;
      case "resume":
      case "retry": u.resume(); return true;
      case "cancel": await u.cancel(); return true;
      case "dismiss":
        queue.remove(u);
        view.remove(u);
        focusPicker();
        return false;
      case "download":
        if (!auth) return false;   // a plain link does it
        event.preventDefault();
        await downloadWithToken(u);
        return false;
      default: return false;
    }
  }

  async function downloadWithToken(u) {
    try {
      const url = URL.createObjectURL(await api.download(u.location));
      const a = Object.assign(document.createElement("a"), { href: url, download: u.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      announce(`Download failed: ${err.message}`);
    }
  }

  createDropZone({
    zone: $("drop-zone"), input: $("file-input"), button: $("choose-button"),
    onFiles: addFiles,
    onFolderRefused: () => announce("Folders cannot be uploaded; drop the files inside them instead."),
  });

  $("drop-hint").textContent = `Up to ${formatBytes(settings.max_file_size)} per file.`;
  $("token-button")?.addEventListener("click", () => auth?.change());
  window.addEventListener("online", () => {
    // Uploads that gave up while offline get going again by themselves.
    for (const u of queue.uploads) if (u.state === "failed" && u.error?.network) u.resume();
  });

  (async () => {
    if (auth) await auth.ensure();
    await resumable.load((fp) => Boolean(queue.find(fp)));
    document.body.dataset.ready = "true";   // for tests and for styling hooks
  })();
}

main();
