// Sends one chunk. The only place that knows how chunk bytes travel, so a
// different transport (a presigned PUT straight to an object store) can
// replace this module without touching the upload flow: it takes the upload,
// the index, the bytes and their MD5, and resolves once the chunk is durable
// or rejects with an ApiError whose `retryable` says what to do.

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
