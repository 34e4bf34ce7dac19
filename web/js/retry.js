// The one retry path. Every request of an upload (init, status, each chunk,
// complete) goes through `retrying`: a failure is retried when the server
// said so (`retryable` in its error object) or when no answer came at all
// (refused, reset, or aborted by the stall detector), after the server's
// Retry-After or an exponential backoff; anything else is thrown at once.

import { isAbort } from "./api.js";
import { backoffDelay, sleep } from "./util.js";

export const MAX_RETRIES = 10;   // ~1.5 min of backoff before giving up

// call(attempt) runs the request; onRetry(err, ms, attempt) tells the user
// that (and when) it will be tried again.
export async function retrying(call, { signal, onRetry = () => {}, retries = MAX_RETRIES,
                                       delay = backoffDelay, wait = sleep } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(attempt);
    } catch (err) {
      if (isAbort(err) || signal?.aborted || !err.retryable || attempt >= retries) throw err;
      const ms = err.retryAfter != null ? err.retryAfter * 1000 + Math.random() * 250
        : delay(attempt);
      onRetry(err, ms, attempt);
      await wait(ms, signal);
    }
  }
}
