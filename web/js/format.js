// Human-readable sizes, speeds and durations (binary units, as browsers'
// own download UIs show them).

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "–";
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  // One decimal below 100 ("7.5 MB"), none when it is zero ("50 GB").
  const digits = i === 0 || n >= 100 ? 0 : 1;
  return `${Number(n.toFixed(digits))} ${UNITS[i]}`;
}

export function formatSpeed(bytesPerSecond) {
  return bytesPerSecond > 0 ? `${formatBytes(bytesPerSecond)}/s` : "";
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

export function percent(done, total) {
  if (total <= 0) return done >= total ? 100 : 0;
  return Math.min(100, Math.floor((done / total) * 100));
}
