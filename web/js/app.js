// The upload page: wires the picker and drop zone to FileUpload objects,
// runs the file queue, renders cards and lists unfinished uploads that can be
// resumed by picking the same file again.

import { Api } from "./api.js";
import { createAuth } from "./auth.js";
import { formatBytes, percent } from "./format.js";
import { createResumeStore, createTokenStore, fingerprint } from "./storage.js";
import { Card, renderOverall, STATE_LABEL } from "./ui.js";
import { ACTIVE, FileUpload } from "./uploader.js";

// Files uploading at the same time; each already runs `parallel` chunk PUTs
// and browsers allow only ~6 connections per host over HTTP/1.1.
const MAX_ACTIVE_FILES = 2;

const DEFAULTS = {
  chunk_size: 8 << 20, chunk_size_min: 64 << 10, chunk_size_max: 64 << 20,
  parallel: 4, max_file_size: 50 * 2 ** 30, auth_required: false, version: "",
};

const $ = (id) => document.getElementById(id);

function readSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse($("settings").textContent) };
  } catch {
    return { ...DEFAULTS };
  }
}

const settings = readSettings();
const store = createResumeStore();
const auth = settings.auth_required ? createAuth(createTokenStore(), $("token-dialog")) : null;
const api = new Api({ auth });

const uploads = [];
const dirty = new Set();
const resumable = new Map();   // fingerprint -> { rec, up }
const fileList = $("file-list");
const live = $("live");
const overallEls = { section: $("overall"), text: $("overall-text"), bar: $("overall-bar") };
let lastAnnouncedQuarter = -1;

function announce(text) {
  // Clearing first makes screen readers repeat an identical message.
  live.textContent = "";
  requestAnimationFrame(() => { live.textContent = text; });
}

// ---- rendering (batched per animation frame) ----------------------------------

let frame = 0;
function scheduleRender(upload) {
  if (upload) dirty.add(upload);
  frame ||= requestAnimationFrame(render);
}

function render() {
  frame = 0;
  for (const u of dirty) u.card.render();
  dirty.clear();
  const overall = renderOverall(uploads, overallEls);
  if (overall && overall.finished < overall.total) {
    const quarter = Math.floor(overall.pct / 25);
    if (quarter > lastAnnouncedQuarter && quarter > 0 && quarter < 4) {
      announce(`Overall progress ${overall.pct}%`);
    }
    lastAnnouncedQuarter = quarter;
  }
}

// Speed and time left change while nothing else happens.
setInterval(() => {
  const busy = uploads.filter((u) => u.state === "uploading");
  if (busy.length) { busy.forEach((u) => dirty.add(u)); scheduleRender(); }
}, 1000);

// ---- the queue ----------------------------------------------------------------------

function onChange(upload) {
  if (upload.state !== upload.lastState) {
    const prev = upload.lastState;
    upload.lastState = upload.state;
    if (prev !== undefined) announceState(upload);
    if (!ACTIVE.has(upload.state)) pump();
  }
  scheduleRender(upload);
}

function announceState(u) {
  const label = STATE_LABEL[u.state] ?? u.state;
  if (u.state === "failed") announce(`${u.name}: failed. ${u.message}`);
  else if (u.state === "done") announce(`${u.name}: upload complete`);
  else if (u.state !== "hashing") announce(`${u.name}: ${label.toLowerCase()}`);
}

function pump() {
  let active = uploads.filter((u) => ACTIVE.has(u.state)).length;
  for (const u of uploads) {
    if (active >= MAX_ACTIVE_FILES) break;
    if (u.state === "queued") { u.start(); active++; }
  }
}

function addFiles(files) {
  const added = [];
  for (const file of files) {
    const fp = fingerprint(file);
    const existing = uploads.find((u) => u.fp === fp && !["done", "cancelled"].includes(u.state));
    if (existing) {
      announce(`${file.name} is already in the list`);
      continue;
    }
    const upload = new FileUpload({ file, api, store, settings, onChange });
    upload.card = new Card(upload, $("file-card-template"));
    upload.lastState = upload.state;
    uploads.push(upload);
    fileList.append(upload.card.el);
    scheduleRender(upload);
    added.push(file.name);
    if (resumable.delete(fp)) renderResumable();
  }
  if (added.length) announce(`Added ${added.length === 1 ? added[0] : `${added.length} files`}`);
  pump();
}

// ---- card buttons (one delegated listener) ------------------------------------

fileList.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-action]");
  const card = button?.closest(".card")?.card;
  if (!card) return;
  const u = card.upload;
  switch (button.dataset.action) {
    case "pause": u.pause(); break;
    case "resume": u.resume(); break;
    case "retry": u.resume(); break;
    case "cancel": await u.cancel(); break;
    case "dismiss": {
      uploads.splice(uploads.indexOf(u), 1);
      card.el.remove();
      scheduleRender();
      $("choose-button").focus();
      return;
    }
    case "download":
      if (!auth) return;   // a plain link does it
      event.preventDefault();
      await downloadWithToken(u);
      return;
    default: return;
  }
  card.render();
  card.focusFirstAction();
});

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

// ---- picking and dropping ---------------------------------------------------------

const input = $("file-input");
const zone = $("drop-zone");
$("choose-button").addEventListener("click", () => input.click());
input.addEventListener("change", () => {
  addFiles([...input.files]);
  input.value = "";   // picking the same file again must fire change again
});
zone.addEventListener("click", (e) => {
  if (e.target === zone || e.target.closest(".drop-icon, .drop-title, .drop-or, .drop-hint")) input.click();
});

let dragDepth = 0;
zone.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; zone.classList.add("dragging"); });
zone.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; zone.classList.remove("dragging"); } });
zone.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  zone.classList.remove("dragging");
  const items = [...(e.dataTransfer.items ?? [])];
  const files = [];
  let folders = 0;
  for (const [i, file] of [...e.dataTransfer.files].entries()) {
    if (items[i]?.webkitGetAsEntry?.()?.isDirectory) folders++;
    else files.push(file);
  }
  if (folders) announce("Folders cannot be uploaded; drop the files inside them instead.");
  addFiles(files);
});
// A file dropped beside the zone must not make the browser navigate away.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (e) => { if (!zone.contains(e.target)) e.preventDefault(); });
}

// ---- unfinished uploads from earlier visits ----------------------------------------

function renderResumable() {
  const list = $("resumable-list");
  list.replaceChildren();
  for (const [fp, { rec, up }] of resumable) {
    const li = $("resumable-template").content.firstElementChild.cloneNode(true);
    li.querySelector(".file-name").textContent = rec.filename;
    li.querySelector(".file-name").title = rec.filename;
    const got = up ? up.received.length : null;
    const pct = up ? percent(got, up.total_chunks) : null;
    li.querySelector(".file-size").textContent = formatBytes(rec.size)
      + (pct === null ? "" : ` · ${pct}% uploaded`);
    const discard = li.querySelector("[data-action=discard]");
    discard.setAttribute("aria-label", `Discard the unfinished upload of ${rec.filename}`);
    discard.addEventListener("click", async () => {
      resumable.delete(fp);
      store.remove(fp);
      renderResumable();
      $("choose-button").focus();
      try { await api.remove(rec.uploadId); } catch { /* expires on its own */ }
    });
    li.dataset.uploadId = rec.uploadId;
    list.append(li);
  }
  $("resumable").hidden = resumable.size === 0;
}

// Local records are only hints: keep those the server still has in progress.
async function loadResumable() {
  const records = store.list();
  if (!records.length) return;
  let server = null;
  try {
    // Merging too: a merge running while the page reloads still ends well.
    server = new Map((await api.list("in_progress,merging")).map((u) => [u.upload_id, u]));
  } catch { /* offline: list what we remember, without percentages */ }
  for (const rec of records) {
    if (server && !server.has(rec.uploadId)) { store.remove(rec.fingerprint); continue; }
    if (uploads.some((u) => u.fp === rec.fingerprint)) continue;
    resumable.set(rec.fingerprint, { rec, up: server?.get(rec.uploadId) ?? null });
  }
  renderResumable();
}

// ---- start ----------------------------------------------------------------------------

$("drop-hint").textContent = `Up to ${formatBytes(settings.max_file_size)} per file.`;
$("token-button")?.addEventListener("click", () => auth?.change());
window.addEventListener("online", () => {
  // Uploads that gave up while offline get going again by themselves.
  for (const u of uploads) if (u.state === "failed" && u.error?.network) u.resume();
});

(async () => {
  if (auth) await auth.ensure();
  await loadResumable();
  document.body.dataset.ready = "true";   // for tests and for styling hooks
})();
