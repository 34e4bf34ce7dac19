// DOM for one upload (a card cloned from <template>) and for the overall
// summary. Text only goes in through textContent: file names are user data.

import { formatBytes, formatDuration, formatSpeed, percent } from "./format.js";

export const STATE_LABEL = {
  queued: "Queued", hashing: "Hashing", uploading: "Uploading", paused: "Paused",
  merging: "Merging", done: "Done", failed: "Failed", cancelled: "Cancelled",
};

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

function progressLine(u, pct) {
  const parts = [`${formatBytes(u.bytesDone)} of ${formatBytes(u.size)}`, `${pct}%`];
  const speed = u.speed;
  if (speed > 0) {
    parts.push(formatSpeed(speed));
    parts.push(`${formatDuration((u.size - u.bytesDone) / speed)} left`);
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
    this.buttons = new Map([...this.el.querySelectorAll("[data-action]")]
      .map((b) => [b.dataset.action, b]));
    const name = $(".file-name");
    name.textContent = upload.name;
    name.title = upload.name;
    $(".file-size").textContent = formatBytes(upload.size);
    this.bar.setAttribute("aria-label", `Progress of ${upload.name}`);
    for (const [action, b] of this.buttons) {
      b.setAttribute("aria-label", `${b.textContent.trim()} ${upload.name}`);
      if (action === "download") b.download = upload.name;
    }
  }

  render() {
    const u = this.upload;
    const pct = percent(u.bytesDone, u.size);
    this.el.dataset.state = u.state;
    if (u.uploadId) this.el.dataset.uploadId = u.uploadId;
    else delete this.el.dataset.uploadId;
    this.badge.textContent = STATE_LABEL[u.state] ?? u.state;
    // CSSOM writes are allowed by the CSP (only style="" attributes are not).
    this.fill.style.width = `${pct}%`;
    const hashing = u.state === "hashing" || u.state === "uploading";
    this.hash.style.width = hashing ? `${percent(u.hashedBytes, u.size)}%` : "0%";
    this.bar.setAttribute("aria-valuenow", String(pct));
    this.bar.setAttribute("aria-valuetext", `${pct}%, ${this.badge.textContent}`);
    this.details.textContent = this.#details(u, pct);
    const problem = u.state === "failed" || (u.state === "cancelled" && u.message !== "Cancelled");
    this.message.textContent = u.notice || (problem ? u.message : "");
    this.message.classList.toggle("error", u.state === "failed");
    this.message.hidden = !this.message.textContent;
    const offered = ACTIONS[u.state] ?? [];
    for (const [action, b] of this.buttons) b.hidden = !offered.includes(action);
    if (u.location) this.buttons.get("download").href = u.location;
  }

  #details(u, pct) {
    switch (u.state) {
      case "queued": return `Waiting for its turn · ${formatBytes(u.size)}`;
      case "hashing": {
        const hp = percent(u.hashedBytes, u.size);
        return u.bytesDone ? `${u.message} ${hp}% checked · ${pct}% already uploaded`
          : `${u.message} ${hp}%`;
      }
      case "uploading": return progressLine(u, pct);
      case "paused": return `Paused at ${formatBytes(u.bytesDone)} of ${formatBytes(u.size)} · ${pct}%`;
      case "merging": return "Assembling and verifying the file on the server…";
      case "done": return u.md5 ? `${u.message} · MD5 ${u.md5} verified by the server` : u.message;
      case "failed": return `Stopped at ${formatBytes(u.bytesDone)} of ${formatBytes(u.size)} · ${pct}%`;
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

export function renderOverall(uploads, { section, text, bar }) {
  const counted = uploads.filter((u) => u.state !== "cancelled");
  section.hidden = counted.length === 0;
  if (!counted.length) return null;
  let size = 0, done = 0, speed = 0, active = 0, finished = 0;
  for (const u of counted) {
    size += u.size;
    done += u.bytesDone;
    speed += u.speed;
    if (u.state === "done") finished++;
    else if (u.state !== "failed" && u.state !== "paused") active++;
  }
  const pct = percent(done, size);
  const parts = [`${finished} of ${counted.length} done`,
    `${formatBytes(done)} of ${formatBytes(size)}`, `${pct}%`];
  if (active && speed > 0) {
    parts.push(formatSpeed(speed), `${formatDuration((size - done) / speed)} left`);
  }
  text.textContent = parts.join(" · ");
  section.classList.toggle("all-done", finished === counted.length);
  bar.querySelector(".bar-fill").style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", String(pct));
  return { pct, finished, total: counted.length };
}
