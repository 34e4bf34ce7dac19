// DOM for one upload (a card cloned from <template>) and for the overall
// summary. Text only goes in through textContent: file names are user data.

import { formatBytes, formatDuration, formatSpeed, percent, t } from "./i18n.js";

// Which buttons each state offers.
const ACTIONS = {
  queued: ["cancel"],
  hashing: ["pause", "cancel"],
  uploading: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  merging: [],
  done: ["download", "dismiss"],
  failed: ["retry", "cancel", "dismiss"],
  cancelled: ["dismiss"],
};

export function stateLabel(u) {
  return t(u.waiting ? "state.waiting" : `state.${u.state}`);
}

// A bar's fill at pct (0-100): scaled, so that its transition needs no layout.
function setBar(fill, pct) {
  fill.style.transform = `scaleX(${pct / 100})`;
}

// Bar width: what the server acknowledged. An empty file has nothing to
// show until it is done; a cancelled one shows no progress at all.
export function barPercent(u) {
  if (u.state === "done") return 100;
  if (u.state === "cancelled" || u.size === 0) return 0;
  return percent(u.bytesDone, u.size);
}

const pctText = (pct) => t("pct", { pct });

function progressLine(u, pct) {
  const parts = [t("overall.amount", { done: formatBytes(u.bytesDone), total: formatBytes(u.size) }),
    pctText(pct)];
  // Only while bytes really move: never during a retry wait or an outage.
  const speed = u.notice || u.waiting ? 0 : u.speed;
  if (speed > 0) {
    parts.push(formatSpeed(speed));
    parts.push(t("left", { time: formatDuration((u.size - u.bytesDone) / speed) }));
  }
  return parts.join(" · ");
}

export class Card {
  constructor(upload, template) {
    this.upload = upload;
    this.el = template.content.firstElementChild.cloneNode(true);
    this.el.card = this;
    const $ = (sel) => this.el.querySelector(sel);
    this.badge = $(".badge");
    this.bar = $(".bar");
    this.fill = $(".bar-fill");
    this.hash = $(".bar-hash");
    this.details = $(".details");
    this.message = $(".message");
    this.thumb = $(".thumb");
    this.buttons = new Map([...this.el.querySelectorAll("[data-action]")]
      .map((b) => [b.dataset.action, b]));
    const name = $(".file-name");
    name.textContent = upload.name;
    name.title = upload.relativePath || upload.name;
    const size = upload.size ? formatBytes(upload.size) : t("card.empty");
    const folder = upload.relativePath?.includes("/")
      ? upload.relativePath.slice(0, upload.relativePath.lastIndexOf("/")) : "";
    $(".file-size").textContent = folder ? `${size} · ${t("card.folder", { path: folder })}` : size;
    this.bar.setAttribute("aria-label", t("card.progress", { name: upload.name }));
    for (const [action, b] of this.buttons) {
      b.setAttribute("aria-label", t("action.label", { action: b.textContent.trim(), name: upload.name }));
      if (action === "download") b.download = upload.name;
    }
  }

  showThumbnail(url) {
    this.thumb.src = url;
    this.thumb.hidden = false;
    this.el.classList.add("has-thumb");
  }

  render() {
    const u = this.upload;
    const pct = barPercent(u);
    this.el.dataset.state = u.state;
    this.el.toggleAttribute("data-waiting", Boolean(u.waiting));
    if (u.uploadId) this.el.dataset.uploadId = u.uploadId;
    else delete this.el.dataset.uploadId;
    this.badge.textContent = stateLabel(u);
    // CSSOM writes are allowed by the CSP (only style="" attributes are not).
    setBar(this.fill, pct);
    const hashing = (u.state === "hashing" || u.state === "uploading") && u.size > 0;
    setBar(this.hash, hashing ? percent(u.hashedBytes, u.size) : 0);
    this.bar.setAttribute("aria-valuenow", String(pct));
    this.bar.setAttribute("aria-valuetext", `${pctText(pct)}, ${this.badge.textContent}`);
    this.details.textContent = this.#details(u, pct);
    const problem = u.state === "failed" || (u.state === "cancelled" && u.message !== t("msg.cancelled"));
    this.message.textContent = u.waiting ? t("waiting") : u.notice || (problem ? u.message : "");
    this.message.classList.toggle("error", u.state === "failed");
    this.message.hidden = !this.message.textContent;
    const offered = ACTIONS[u.state] ?? [];
    for (const [action, b] of this.buttons) b.hidden = !offered.includes(action);
    if (u.location) this.buttons.get("download").href = u.location;
  }

  #details(u, pct) {
    const amounts = { done: formatBytes(u.bytesDone), total: formatBytes(u.size), pct: pctText(pct) };
    if (u.waiting) return t("card.waiting", amounts);
    switch (u.state) {
      case "queued": return t("card.queued", { size: formatBytes(u.size) });
      case "hashing": {
        const hp = percent(u.hashedBytes, u.size);
        return u.bytesDone ? t("card.hashing.resumed", { message: u.message, pct: hp, done: pct })
          : t("card.hashing", { message: u.message, pct: hp });
      }
      case "uploading": return progressLine(u, pct);
      case "paused": return t("card.paused", amounts);
      case "merging": return t("card.merging");
      case "done":
        // Verified by parts (direct mode), the server never hashed the whole
        // file: the card must not say it confirmed the page's MD5.
        if (u.verified === "parts") return t("card.done.parts", { message: u.message });
        return u.md5 ? t("card.done.md5", { message: u.message, md5: u.md5 }) : u.message;
      case "failed": return t("card.failed", amounts);
      default: return u.message;
    }
  }

  // After a button hides itself (Pause → Resume), keep keyboard focus in the card.
  focusFirstAction() {
    for (const b of this.buttons.values()) {
      if (!b.hidden) { b.focus(); return; }
    }
  }
}

// The summary line and bar of every upload not cancelled; which bulk
// actions make sense now.
export function renderOverall(uploads, { section, text, bar, bulk }) {
  const counted = uploads.filter((u) => u.state !== "cancelled");
  section.hidden = counted.length === 0;
  if (!counted.length) return null;
  let size = 0, done = 0, speed = 0, moving = 0, finished = 0;
  for (const u of counted) {
    size += u.size;
    done += u.state === "done" ? u.size : u.bytesDone;
    if (u.state === "done") finished++;
    else if (u.state === "uploading" && !u.waiting && !u.notice) { moving++; speed += u.speed; }
  }
  const pct = size ? percent(done, size) : percent(finished, counted.length);
  const parts = [t("overall.done", { done: finished, count: counted.length }),
    t("overall.amount", { done: formatBytes(done), total: formatBytes(size) }), pctText(pct)];
  if (moving && speed > 0) {
    parts.push(formatSpeed(speed), t("left", { time: formatDuration((size - done) / speed) }));
  }
  text.textContent = parts.join(" · ");
  section.classList.toggle("all-done", finished === counted.length);
  setBar(bar.querySelector(".bar-fill"), pct);
  bar.setAttribute("aria-valuenow", String(pct));
  const can = {
    pause: uploads.some((u) => u.canPause),
    resume: uploads.some((u) => u.state === "paused"),
    retry: uploads.some((u) => u.state === "failed"),
    cancel: uploads.some((u) => u.canCancel),
  };
  for (const b of bulk) b.hidden = !can[b.dataset.bulk];
  return { pct, finished, total: counted.length };
}
