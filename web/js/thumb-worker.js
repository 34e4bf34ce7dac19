// Image thumbnails off the main thread: decode, scale to fit SIZE px, encode
// as PNG. Answers { id, blob } or { id, blob: null } for what it cannot
// decode (a format the browser does not know, a damaged file).
const SIZE = 96;

self.onmessage = async ({ data: { id, file } }) => {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, SIZE / Math.max(bitmap.width, bitmap.height));
    const w = Math.max(1, Math.round(bitmap.width * scale));
    const h = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = new OffscreenCanvas(w, h);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, w, h);
    bitmap.close();
    self.postMessage({ id, blob: await canvas.convertToBlob({ type: "image/png" }) });
  } catch {
    self.postMessage({ id, blob: null });
  }
};
