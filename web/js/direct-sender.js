// Sends one chunk straight to the object store (direct mode, docs/s3.md): a
// presigned PUT with exactly the headers the server signed (Content-MD5, so
// the store itself refuses other bytes), without the Authorization header
// and without cookies. Resolves once the store holds the part; rejects with
// an ApiError whose `retryable` says what to do, like the server's chunk
// sender, so the upload flow's one retry path serves both. Which parts
// arrived is the server's to say (status reads them from the store).

import { ApiError } from "./api.js";
import { PartUrls } from "./part-urls.js";
import { send, TransportError } from "./transport.js";

// An S3-style XML error: <Error><Code>BadDigest</Code>...
function storeError(resp, index) {
  const code = /<Code>([^<]{1,100})<\/Code>/.exec(resp.text ?? "")?.[1] ?? "";
  const { status } = resp;
  const details = { index, store_code: code };
  if (code === "BadDigest" || code === "InvalidDigest") {
    // The bytes read differ from the bytes hashed: the file changed.
    return new ApiError(`chunk ${index}: checksum refused by the storage service`,
                        { status, code: "checksum_mismatch", details });
  }
  if (code === "NoSuchUpload") {
    return new ApiError("the storage service no longer takes parts of this upload",
                        { status, code: "store_closed", details });
  }
  // 403: the URL expired or the clocks disagree (a new URL is signed for the
  // retry); 5xx, 429, SlowDown: the store is busy. Anything else is final.
  const retryAfter = Number(resp.header("Retry-After")) || null;
  return new ApiError(`${status} ${code || resp.statusText || "error"}`, {
    status, code: "store_error", details, retryAfter,
    retryable: status === 403 || status === 429 || status >= 500,
  });
}

export function directChunkSender(api) {
  const urls = new Map();   // upload id -> its PartUrls

  return {
    async send({ uploadId, index, blob, md5, signal, onProgress, ahead = () => [] }) {
      if (!urls.has(uploadId)) urls.set(uploadId, new PartUrls(api, uploadId));
      const cache = urls.get(uploadId);
      const part = await cache.get(index, md5, ahead, signal);
      let resp;
      try {
        resp = await send({ method: part.method, url: part.url, headers: part.headers,
                            body: blob, signal, stallMs: api.stallMs,
                            onUploadProgress: onProgress });
      } catch (e) {
        if (!(e instanceof TransportError)) throw new ApiError("aborted", { aborted: true, cause: e });
        // No answer (or a CORS refusal, which looks the same to a page).
        throw new ApiError(e.stalled ? "The storage service stopped responding"
          : "Cannot reach the storage service", { network: true, stalled: e.stalled, cause: e });
      }
      if (resp.status >= 200 && resp.status < 300) {
        cache.forget(index);
        return { index };
      }
      if (resp.status === 403) cache.drop(index);
      throw storeError(resp, index);
    },
  };
}
