// Where files come in: "Choose files" (the File System Access picker where
// the browser has one, so the file can be read again after a reload; the
// hidden input otherwise), "Choose a folder", dropping files or folders on
// the zone, and pasting files anywhere on the page. Hands `onItems` a list
// of { file, relativePath, handle } (path and handle may be empty).

// Every file below a dropped directory entry, with its path from the drop.
async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, relativePath: entry.fullPath.replace(/^\//, "") });
    return;
  }
  const reader = entry.createReader();
  // readEntries answers in batches (100 in Chromium) until an empty one.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) await walk(child, out);
  }
}

async function droppedItems(dataTransfer) {
  const files = [...dataTransfer.files];
  const items = [...(dataTransfer.items ?? [])].filter((i) => i.kind === "file");
  // Entries and handles must be taken before the first await: the drop's
  // data store closes when the event handler returns.
  const entries = items.map((i) => i.webkitGetAsEntry?.() ?? null);
  const handles = items.map((i) => i.getAsFileSystemHandle?.() ?? null);
  const out = [];
  for (const [i, file] of files.entries()) {
    const entry = entries[i];
    if (entry?.isDirectory) {
      await walk(entry, out);
      continue;
    }
    const handle = await handles[i]?.catch(() => null);
    out.push({ file, relativePath: "", handle: handle?.kind === "file" ? handle : null });
  }
  return out;
}

export function createDropZone({ zone, input, folderInput, button, folderButton, onItems }) {
  const pickFiles = async () => {
    if (!window.showOpenFilePicker) { input.click(); return; }
    let handles;
    try {
      handles = await window.showOpenFilePicker({ multiple: true });
    } catch (err) {
      if (err.name !== "AbortError") input.click();   // refused here: the plain input
      return;
    }
    onItems(await Promise.all(handles.map(async (handle) => (
      { file: await handle.getFile(), relativePath: "", handle }))));
  };
  button.addEventListener("click", pickFiles);
  folderButton.addEventListener("click", () => folderInput.click());
  input.addEventListener("change", () => {
    onItems([...input.files].map((file) => ({ file, relativePath: "" })));
    input.value = "";   // picking the same file again must fire change again
  });
  folderInput.addEventListener("change", () => {
    onItems([...folderInput.files].map((file) => ({ file, relativePath: file.webkitRelativePath })));
    folderInput.value = "";
  });
  zone.addEventListener("click", (e) => {
    if (e.target === zone || e.target.closest(".drop-icon, .drop-title, .drop-or, .drop-hint")) {
      pickFiles();
    }
  });

  let depth = 0;
  const leave = () => { depth = 0; zone.classList.remove("dragging"); };
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => { if (--depth <= 0) leave(); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    leave();
    droppedItems(e.dataTransfer).then(onItems);
  });
  // A file dropped beside the zone must not make the browser navigate away.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => { if (!zone.contains(e.target)) e.preventDefault(); });
  }
  // Pasted files (a screenshot, files copied in a file manager); text pasted
  // into a field stays text.
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (!files.length || e.target.closest?.("input, textarea")) return;
    e.preventDefault();
    onItems(files.map((file) => ({ file, relativePath: "" })));
  });
}
