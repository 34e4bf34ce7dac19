// The upload page: reads the server's settings and wires the parts
// together. Each part keeps its own state: the queue (queue.js), the cards
// (file-list.js), the drop zone (dropzone.js), the unfinished uploads of
// earlier visits (resume-list.js); this file holds none.

import { Api } from "./api.js";
import { createAnnouncer } from "./announcer.js";
import { createAuth } from "./auth.js";
import { chunkSender } from "./chunk-sender.js";
import { Connectivity } from "./connectivity.js";
import { createDropZone } from "./dropzone.js";
import { FileListView } from "./file-list.js";
import { createHandleStore } from "./handles.js";
import { chooseLanguage, localize, setLocale, t } from "./i18n.js";
import { UploadQueue } from "./queue.js";
import { applyRestrictions, describeRestrictions } from "./restrictions.js";
import { ResumeList } from "./resume-list.js";
import { RETRY_DEFAULTS } from "./retry.js";
import { createResumeStore, createTokenStore } from "./storage.js";
import { Thumbnails } from "./thumbnails.js";

const DEFAULTS = {
  chunk_size: 8 << 20, chunk_size_min: 64 << 10, chunk_size_max: 64 << 20,
  parallel: 4, hash_workers: 2, max_file_size: 50 * 2 ** 30, auth_required: false, version: "",
  allowed_types: [], max_files: 0, max_total_size: 0, accepts_metadata: false,
  // A request that makes no progress for this long is aborted and retried.
  stall_timeout: 30, merge_wait_seconds: 20,
  retry: RETRY_DEFAULTS,
};

const $ = (id) => document.getElementById(id);

function readSettings() {
  try {
    const sent = JSON.parse($("settings").textContent);
    return { ...DEFAULTS, ...sent, retry: { ...RETRY_DEFAULTS, ...sent.retry } };
  } catch {
    return { ...DEFAULTS };
  }
}

function main() {
  setLocale(chooseLanguage());
  localize(document);
  for (const tpl of document.querySelectorAll("template")) localize(tpl.content);
  $("version").textContent = t("page.version", { version: $("version").dataset.version });

  const settings = readSettings();
  const handles = createHandleStore();
  const resumeStore = createResumeStore();
  // A resume record and the file handle kept for it go together.
  const store = Object.assign(Object.create(resumeStore), {
    remove(fp) { resumeStore.remove(fp); handles.delete(fp); },
  });
  const auth = settings.auth_required ? createAuth(createTokenStore(), $("token-dialog")) : null;
  const api = new Api({ auth, stallMs: settings.stall_timeout * 1000 });
  const connectivity = new Connectivity({ probeMs: settings.retry.probeMs });
  const announce = createAnnouncer($("live"));
  const focusPicker = () => $("choose-button").focus();

  const queue = new UploadQueue({
    api, sender: chunkSender(api), connectivity, store, settings,
    onChange: (upload, previous) => view.changed(upload, previous),
  });
  const view = new FileListView({
    list: $("file-list"), template: $("file-card-template"), queue, announce,
    thumbnails: new Thumbnails(),
    overall: { section: $("overall"), text: $("overall-text"), bar: $("overall-bar"),
               bulk: [...document.querySelectorAll("[data-bulk]")] },
    onAction: (action, upload, event) => runAction(action, upload, event),
    onBulk: (action) => runBulk(action),
  });
  const resumable = new ResumeList({
    section: $("resumable"), list: $("resumable-list"), hint: $("resumable-hint"),
    template: $("resumable-template"), api, store, handles, onDiscarded: focusPicker,
    onResume: (item) => addItems([item]), onMessage: (text) => showRefusals([text]),
  });

  function showRefusals(lines) {
    $("refusal-list").replaceChildren(...lines.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    $("refusals").hidden = lines.length === 0;
  }

  // items: [{ file, relativePath, handle }] from a picker, a drop or a paste.
  function addItems(items) {
    const { accepted, refused } = applyRestrictions(items, queue.uploads, settings);
    showRefusals(refused);
    const added = [];
    for (const { file, relativePath = "", handle } of accepted) {
      const upload = queue.add(file, relativePath);
      if (!upload) {
        announce(t("announce.duplicate", { name: file.name }));
        continue;
      }
      if (handle) handles.put(upload.fp, handle);
      view.add(upload);
      resumable.taken(upload.fp);
      added.push(file.name);
    }
    if (added.length) announce(t("announce.added", { count: added.length, name: added[0] }));
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

  async function runBulk(action) {
    const all = [...queue.uploads];
    if (action === "pause") all.forEach((u) => u.pause());
    if (action === "cancel") await Promise.all(all.map((u) => u.cancel()));
    // Resumed and retried files take their turn like new ones.
    if (action === "resume" || action === "retry") {
      const from = action === "resume" ? "paused" : "failed";
      for (const u of all) if (u.state === from) u.requeue();
      queue.pump();
    }
  }

  // With auth on, a plain link would lack the token: ask for a signed one
  // and let the browser download it (streamed, or from the object store),
  // never holding the file in the page's memory.
  async function downloadWithToken(u) {
    try {
      const { url } = await api.link(u.uploadId);
      const a = Object.assign(document.createElement("a"), { href: url, download: u.name });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      announce(t("announce.downloadFailed", { detail: err.message }));
    }
  }

  createDropZone({
    zone: $("drop-zone"), input: $("file-input"), folderInput: $("folder-input"),
    button: $("choose-button"), folderButton: $("folder-button"), onItems: addItems,
  });

  $("file-input").accept = settings.allowed_types.join(",");
  $("drop-hint").textContent = [describeRestrictions(settings), t("drop.paste")].join(" ");
  $("token-button")?.addEventListener("click", () => auth?.change());

  (async () => {
    if (auth) await auth.ensure();
    await resumable.load((fp) => Boolean(queue.find(fp)));
    document.body.dataset.ready = "true";   // for tests and for styling hooks
  })();
}

main();
