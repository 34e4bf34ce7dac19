// The server's page restrictions (config `page:` and limits.max_file_size),
// checked before anything is sent so the user learns at once, by name, why
// a file was not added.

import { formatBytes, t } from "./i18n.js";

export function typeMatcher(allowed) {
  const rules = allowed.map((r) => r.toLowerCase());
  return (file) => !rules.length || rules.some((rule) => {
    if (rule.startsWith(".")) return file.name.toLowerCase().endsWith(rule);
    const type = (file.type || "").toLowerCase();
    return rule.endsWith("/*") ? type.startsWith(rule.slice(0, -1)) : type === rule;
  });
}

// items: [{file, ...}] being added; current: uploads already in the page
// (cancelled ones no longer count). Returns { accepted, refused: [text] }.
export function applyRestrictions(items, current, settings) {
  const allowed = settings.allowed_types ?? [];
  const typeOk = typeMatcher(allowed);
  const live = current.filter((u) => u.state !== "cancelled");
  let count = live.length;
  let total = live.reduce((sum, u) => sum + u.size, 0);
  const accepted = [];
  const refused = [];
  for (const item of items) {
    const { file } = item;
    const name = item.relativePath || file.name;
    if (!typeOk(file)) {
      refused.push(t("refuse.type", { name, types: allowed.join(", ") }));
    } else if (settings.max_file_size && file.size > settings.max_file_size) {
      refused.push(t("refuse.size", { name, size: formatBytes(settings.max_file_size) }));
    } else if (settings.max_files && count + 1 > settings.max_files) {
      refused.push(t("refuse.count", { name, count: settings.max_files }));
    } else if (settings.max_total_size && total + file.size > settings.max_total_size) {
      refused.push(t("refuse.total", { name, size: formatBytes(settings.max_total_size) }));
    } else {
      accepted.push(item);
      count += 1;
      total += file.size;
    }
  }
  return { accepted, refused };
}

// What the drop zone says about the limits, one sentence each.
export function describeRestrictions(settings) {
  const lines = [];
  if (settings.max_file_size) lines.push(t("drop.limit.size", { size: formatBytes(settings.max_file_size) }));
  if (settings.allowed_types?.length) lines.push(t("drop.limit.types", { types: settings.allowed_types.join(", ") }));
  if (settings.max_files) lines.push(t("drop.limit.files", { count: settings.max_files }));
  if (settings.max_total_size) lines.push(t("drop.limit.total", { size: formatBytes(settings.max_total_size) }));
  return lines.join(" ");
}
