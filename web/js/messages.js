// Failures turned into sentences a user can act on. Kept apart from the
// upload flow so the wording can change without touching the logic.

import { ApiError } from "./api.js";
import { t } from "./i18n.js";

// A failure already worded for the user (the upload is gone on the server,
// or the server keeps reporting chunks missing): shown as it is.
export function userError(text) {
  const err = new Error(text);
  err.described = true;
  return err;
}

export function retryNotice(err, ms) {
  const key = err.stalled ? "retry.stalled"
    : err.network ? "retry.network"
      : err.code === "rate_limited" ? "retry.busy"
        : err.code === "conflict" ? "retry.conflict"
          : err.code === "store_error" ? "retry.store"
            : "retry.server";
  return t(key, { seconds: Math.max(1, Math.round(ms / 1000)) });
}

// Turn any failure into a sentence a user can act on.
export function describeError(err, index) {
  if (err.described) return err;
  let text;
  if (err.name === "NotReadableError" || err.name === "NotFoundError"
      || /could not be read|NotReadable/i.test(err.message)) {
    text = t("err.unreadable");
  } else if (!(err instanceof ApiError)) {
    text = t("err.hashing", { detail: err.message });
  } else if (err.network) {
    text = t("err.network");
  } else if (err.code === "checksum_mismatch") {
    text = index === undefined ? t("err.fileMismatch") : t("err.chunkMismatch", { index });
  } else if (err.code === "unauthorized") {
    text = t("err.unauthorized");
  } else if (err.code === "store_closed") {
    text = t("err.storeClosed");
  } else if (err.code === "store_error") {
    text = t("err.store", { detail: err.message });
  } else {
    text = t("err.refused", { detail: err.message });
  }
  const out = err instanceof ApiError
    ? new ApiError(text, { status: err.status, code: err.code, details: err.details,
                           retryable: err.retryable, network: err.network, cause: err })
    : new Error(text, { cause: err });
  out.described = true;
  return out;
}
