// Sends one chunk. The only place that knows how chunk bytes travel: through
// the server (a PUT to /upload/{id}/chunk) or, when the upload object says
// `direct`, straight to the object store (direct-sender.js). Either takes
// the upload, the index, the bytes and their MD5, and resolves once the
// chunk is durable or rejects with an ApiError whose `retryable` says what
// to do.

import { directChunkSender } from "./direct-sender.js";

// The body is a Blob slice: the browser streams it from disk and sets
// Content-Length itself, so the main thread never holds the bytes.
export function serverChunkSender(api) {
  return {
    send({ uploadId, index, blob, md5, signal, onProgress }) {
      const q = new URLSearchParams({ index: String(index) });
      if (md5) q.set("md5", md5);
      return api.request("PUT", `/upload/${uploadId}/chunk?${q}`, {
        body: blob, signal, onUploadProgress: onProgress,
        headers: { "Content-Type": "application/octet-stream" },
      }).then((r) => r.data);
    },
  };
}

// The page's sender: `direct` (from the upload object) picks the road.
export function chunkSender(api) {
  const server = serverChunkSender(api);
  const direct = directChunkSender(api);
  return { send: (chunk) => (chunk.direct ? direct : server).send(chunk) };
}
