// Failures turned into sentences a user can act on. Kept apart from the
// upload flow so the wording can change without touching the logic.

import { ApiError } from "./api.js";

// A failure already worded for the user (the upload is gone on the server,
// or the server keeps reporting chunks missing): shown as it is.
export function userError(text) {
  const err = new Error(text);
  err.described = true;
  return err;
}

export function retryNotice(err, ms) {
  const why = err.stalled ? "The server stopped responding"
    : err.network ? "Connection lost"
      : err.code === "rate_limited" ? "The server is busy"
        : err.code === "conflict" ? "The upload is busy on the server"
          : "The server had a problem";
  return `${why}; retrying in ${Math.max(1, Math.round(ms / 1000))} s…`;
}

// Turn any failure into a sentence a user can act on.
export function describeError(err, index) {
  if (err.described) return err;
  let text;
  if (err.name === "NotReadableError" || err.name === "NotFoundError"
      || /could not be read|NotReadable/i.test(err.message)) {
    text = "The file can no longer be read (was it moved or changed?). Pick it again.";
  } else if (!(err instanceof ApiError)) {
    text = `Hashing failed: ${err.message}`;
  } else if (err.network) {
    text = "Cannot reach the server. Your progress is kept: press Retry when the "
           + "connection is back (or pick the file again after a reload).";
  } else if (err.code === "checksum_mismatch") {
    text = index === undefined
      ? "The assembled file does not match this file's checksum (did the file change "
        + "while uploading?). Cancel, then pick the file again."
      : `Chunk ${index} arrived corrupted (checksum mismatch). Press Retry.`;
  } else if (err.code === "unauthorized") {
    text = "Not authorised: the access token was refused.";
  } else {
    text = `The server refused the upload: ${err.message}`
           + (err.retryable ? " (gave up after several tries; press Retry)" : "");
  }
  const out = err instanceof ApiError
    ? new ApiError(text, { status: err.status, code: err.code, details: err.details,
                           retryable: err.retryable, network: err.network, cause: err })
    : new Error(text, { cause: err });
  out.described = true;
  return out;
}
