// The one retry path. Every request of an upload (init, status, each chunk,
// complete) goes through `retrying`: a failure is retried when the server
// said so (`retryable` in its error object) or when no answer came at all
// (refused, reset, or aborted by the stall detector), after the server's
// Retry-After or an exponential backoff; anything else is thrown at once.
//
// A retryable failure is never final: after `fast` quick retries the caller
// is told it is waiting (onWaiting) and the retries go on with a capped
// backoff, each wait cut short by the connectivity watcher.

import { isAbort } from "./api.js";
import { backoffDelay, sleep } from "./util.js";

export const RETRY_DEFAULTS = { fast: 6, baseMs: 500, capMs: 30_000, probeMs: 5000 };

// call(attempt) runs the request; onRetry(err, ms) says a quick retry comes
// in ms; onWaiting(err) says the retries went slow (an outage, most likely).
// `quickOnly`: give up after the quick retries (a request the user will not
// wait for, such as telling the server about a cancel).
export async function retrying(call, { signal, onRetry = () => {}, onWaiting = () => {},
                                       policy = RETRY_DEFAULTS, connectivity = null,
                                       quickOnly = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(attempt);
    } catch (err) {
      if (isAbort(err) || signal?.aborted || !err.retryable) throw err;
      if (quickOnly && attempt >= policy.fast) throw err;
      const ms = err.retryAfter != null ? err.retryAfter * 1000 + Math.random() * 250
        : backoffDelay(attempt, { base: policy.baseMs, cap: policy.capMs });
      if (attempt < policy.fast) {
        onRetry(err, ms);
        await sleep(ms, signal);
      } else {
        onWaiting(err);
        if (connectivity) await connectivity.wait(ms, signal, { probe: err.network });
        else await sleep(ms, signal);
      }
    }
  }
}
