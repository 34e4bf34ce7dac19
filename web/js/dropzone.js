// Where files come in: the "Choose files" button (through the hidden
// input) and the drop zone. Hands plain File lists to `onFiles`.

export function createDropZone({ zone, input, button, onFiles, onFolderRefused }) {
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    onFiles([...input.files]);
    input.value = "";   // picking the same file again must fire change again
  });
  zone.addEventListener("click", (e) => {
    if (e.target === zone || e.target.closest(".drop-icon, .drop-title, .drop-or, .drop-hint")) {
      input.click();
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
    const items = [...(e.dataTransfer.items ?? [])];
    const files = [];
    let folders = 0;
    for (const [i, file] of [...e.dataTransfer.files].entries()) {
      if (items[i]?.webkitGetAsEntry?.()?.isDirectory) folders++;
      else files.push(file);
    }
    if (folders) onFolderRefused();
    onFiles(files);
  });
  // A file dropped beside the zone must not make the browser navigate away.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => { if (!zone.contains(e.target)) e.preventDefault(); });
  }
}
