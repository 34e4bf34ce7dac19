// Resume records in localStorage, keyed by a fingerprint of the file.
//
// Like tus-js-client's urlStorage: one small object with a no-op fallback, so
// private windows, disabled storage or a full quota degrade to "no resume
// after reload" instead of breaking the upload.

const PREFIX = "uploader:resume:";
const TOKEN_KEY = "uploader:token";

// Name + size + last-modified identifies "the same file picked again" without
// reading it; a changed file gets a new fingerprint and a fresh upload (and
// the whole-file MD5 at complete would catch an edit that kept all three).
// Inside a folder the relative path tells apart files of one name.
export function fingerprint(file, relativePath = "") {
  const base = `${file.name}|${file.size}|${file.lastModified}`;
  return relativePath ? `${base}|${relativePath}` : base;
}

function probe() {
  try {
    const ls = window.localStorage;
    const k = `${PREFIX}__probe__`;
    ls.setItem(k, "1");
    ls.removeItem(k);
    return ls;
  } catch {
    return null;
  }
}

class LocalResumeStore {
  constructor(ls) { this.ls = ls; }

  get(fp) {
    try { return JSON.parse(this.ls.getItem(PREFIX + fp)); } catch { return null; }
  }

  set(fp, record) {
    try { this.ls.setItem(PREFIX + fp, JSON.stringify({ ...record, fingerprint: fp })); }
    catch { /* quota full: resume after reload is lost, the upload goes on */ }
  }

  remove(fp) {
    try { this.ls.removeItem(PREFIX + fp); } catch { /* nothing to do */ }
  }

  list() {
    const out = [];
    for (let i = 0; i < this.ls.length; i++) {
      const key = this.ls.key(i);
      if (!key?.startsWith(PREFIX)) continue;
      const rec = this.get(key.slice(PREFIX.length));
      if (rec?.uploadId) out.push(rec);
    }
    return out.sort((a, b) => (a.savedAt ?? 0) - (b.savedAt ?? 0));
  }
}

class NoopResumeStore {
  get() { return null; }
  set() {}
  remove() {}
  list() { return []; }
}

export function createResumeStore() {
  const ls = probe();
  return ls ? new LocalResumeStore(ls) : new NoopResumeStore();
}

// The bearer token: localStorage when it works, memory otherwise (then the
// user is asked again after a reload, which is the safe direction to fail).
export function createTokenStore() {
  const ls = probe();
  let memory = null;
  return {
    get() {
      if (ls) { try { return ls.getItem(TOKEN_KEY); } catch { /* fall through */ } }
      return memory;
    },
    set(token) {
      memory = token;
      if (ls) { try { ls.setItem(TOKEN_KEY, token); } catch { /* memory only */ } }
    },
    clear() {
      memory = null;
      if (ls) { try { ls.removeItem(TOKEN_KEY); } catch { /* nothing */ } }
    },
  };
}
