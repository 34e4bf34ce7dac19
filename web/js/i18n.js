// The page's words and numbers. Every user-visible string comes from one
// catalog per language (locales/*.js); the language is the first of the
// browser's languages that has a catalog, English otherwise. Numbers, sizes,
// durations and dates go through Intl in that language.
//
// Set once at start (setLocale), before anything renders: a page never
// switches language while it runs, so the modules share it as they share
// the browser's own locale.

import de from "./locales/de.js";
import en from "./locales/en.js";

const CATALOGS = { en, de };

let lang = "en";
let messages = en;
let plurals = new Intl.PluralRules("en");

export function chooseLanguage(preferred = navigator.languages ?? [navigator.language]) {
  for (const tag of preferred) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (CATALOGS[base]) return base;
  }
  return "en";
}

export function setLocale(tag) {
  lang = CATALOGS[tag] ? tag : "en";
  messages = CATALOGS[lang];
  plurals = new Intl.PluralRules(lang);
  document.documentElement.lang = lang;
}

export function language() { return lang; }

// t("key", {name: "x"}): the catalog's text with {name} filled in; an entry
// with plural forms ({one, other}) is chosen by params.count.
export function t(key, params = {}) {
  let text = messages[key] ?? en[key];
  if (text === undefined) throw new Error(`no text for ${key}`);
  if (typeof text === "object") text = text[plurals.select(params.count ?? 0)] ?? text.other;
  return text.replace(/\{(\w+)\}/g, (_, name) => {
    const value = params[name];
    return typeof value === "number" ? formatNumber(value) : String(value ?? "");
  });
}

// Every element with data-i18n gets its text from the catalog, and
// data-i18n-attr="aria-label:key;title:key" its attributes.
export function localize(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
}

export function formatNumber(n, options) {
  return new Intl.NumberFormat(lang, options).format(n);
}

// Decimal units, as their labels say (1 MB = 1,000,000 bytes): what disks
// and operating systems other than Windows show.
const UNITS = ["byte", "kilobyte", "megabyte", "gigabyte", "terabyte", "petabyte"];

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "–";
  let i = 0;
  while (n >= 1000 && i < UNITS.length - 1) { n /= 1000; i++; }
  // Three significant digits at most ("7.5 MB", "191 MB", "50 GB").
  const digits = i === 0 || n >= 100 ? 0 : 1;
  return formatNumber(n, { style: "unit", unit: UNITS[i], unitDisplay: i === 0 ? "long" : "short",
                           maximumFractionDigits: digits });
}

export function formatSpeed(bytesPerSecond) {
  return bytesPerSecond > 0 ? t("speed", { size: formatBytes(bytesPerSecond) }) : "";
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  let s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  s %= 60;
  const parts = h ? { hours: h, minutes: m } : m ? { minutes: m, seconds: s } : { seconds: s };
  if (Intl.DurationFormat) return new Intl.DurationFormat(lang, { style: "short" }).format(parts);
  return Object.entries(parts).map(([unit, v]) => formatNumber(v, {
    style: "unit", unit: unit.slice(0, -1), unitDisplay: "short" })).join(" ");
}

export function formatDate(ms) {
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(ms);
}

export function percent(done, total) {
  if (total <= 0) return done >= total ? 100 : 0;
  return Math.min(100, Math.floor((done / total) * 100));
}
