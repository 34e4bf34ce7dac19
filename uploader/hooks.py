"""The blocking pre-create hook: before an upload is created the server
POSTs the request to ``hooks.pre_create_url`` and does what the answer says.
This is how an application plugs in its own rules (who may upload what, how
much) and its own authentication (the allow-listed request headers, such as
``Authorization`` and ``Cookie``, are passed on).

Contract (README "The pre-create hook"):

- request: ``{"type": "pre-create", "owner", "filename", "size",
  "chunk_size", "metadata", "headers": {name: value}}``;
- ``200 {"allow": true, "owner"?, "metadata"?, "max_size"?}``: create, as
  that owner, with that metadata (replacing the client's), refusing files
  over ``max_size`` (413);
- ``200 {"allow": false, "status"?, "message"?}`` or any 4xx answer with an
  optional ``{"message"}``: refused; the client gets our JSON error with
  that status (its code from the error table) and message;
- anything else (5xx, no JSON, a timeout, connection refused): 503
  ``unavailable``. It fails closed: no hook answer, no upload.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from tornado.httpclient import AsyncHTTPClient

from .errors import UploadError, Unavailable
from .config import HooksConfig
from .metadata import check_metadata
from .config.validation import OWNER_RE

log = logging.getLogger("uploader.hooks")
MAX_MESSAGE = 500  # characters of a hook's message passed to the client
# A refusal's status -> the error-table code the client sees; other 4xx: 403.
REFUSALS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 409: "conflict",
            413: "too_large", 429: "rate_limited", 507: "insufficient_storage"}


@dataclass(frozen=True)
class Decision:
    owner: str
    metadata: dict[str, str]
    max_size: int | None = None


class HookBroken(Exception):
    """The hook's answer is not one of the contract's (logged, then 503)."""


def refusal(status: Any, message: Any) -> UploadError:
    code = REFUSALS.get(status, "forbidden") if isinstance(status, int) else "forbidden"
    text = message if isinstance(message, str) and message else "refused by the pre-create hook"
    error = UploadError(code, text[:MAX_MESSAGE], hook="pre-create")
    if code == "unauthorized":  # RFC 6750, as our own 401s
        error.headers["WWW-Authenticate"] = 'Bearer realm="uploader"'
    return error


def decide(answer: Any, owner: str, metadata: dict[str, str]) -> Decision:
    """A 200 answer's JSON -> the decision; raises the refusal or HookBroken."""
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise HookBroken('the answer must be a JSON object with "allow": true or false')
    if not answer["allow"]:
        raise refusal(answer.get("status", 403), answer.get("message"))
    new_owner = answer.get("owner", owner)
    if not isinstance(new_owner, str) or not OWNER_RE.match(new_owner):
        raise HookBroken("owner must be 1-64 characters of letters, digits, '._@-'")
    new_metadata = metadata
    if "metadata" in answer:
        try:
            new_metadata = check_metadata(answer["metadata"])
        except UploadError as exc:
            raise HookBroken(f"metadata: {exc.message}") from None
    max_size = answer.get("max_size")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)
                                 or max_size < 0):
        raise HookBroken("max_size must be an integer >= 0")
    return Decision(new_owner, new_metadata, max_size)


class PreCreateHook:
    def __init__(self, config: HooksConfig) -> None:
        self.url = config.pre_create_url
        self.timeout = config.timeout
        self.forward = {name.lower() for name in config.forward_headers}
        self.client = AsyncHTTPClient(force_instance=True)

    async def check(self, *, owner: str, filename: str, size: int, chunk_size: int,
                    metadata: dict[str, str], headers: Mapping[str, str] | None) -> Decision:
        forwarded = {name: value for name, value in (headers or {}).items()
                     if name.lower() in self.forward}
        body = json.dumps({"type": "pre-create", "owner": owner, "filename": filename,
                           "size": size, "chunk_size": chunk_size, "metadata": metadata,
                           "headers": forwarded})
        try:
            try:
                response = await self.client.fetch(
                    self.url, method="POST", body=body,
                    headers={"Content-Type": "application/json"},
                    connect_timeout=self.timeout, request_timeout=self.timeout,
                    follow_redirects=False, raise_error=False)
            except Exception as exc:  # timeouts and refused connections raise anyway
                raise HookBroken(f"no answer: {exc}") from None
            if response.code == 599:
                raise HookBroken(f"no answer: {response.error}")
            answer = _json(response.body)
            if 400 <= response.code < 500:
                raise refusal(response.code,
                              answer.get("message") if isinstance(answer, dict) else None)
            if response.code != 200:
                raise HookBroken(f"HTTP {response.code}")
            return decide(answer, owner, metadata)
        except HookBroken as exc:
            # Fail closed: no decision, no upload. The reason stays in the log
            # (it may name the hook's host); the client learns it is transient.
            log.warning("pre-create hook failed: %s", exc)
            raise Unavailable("the pre-create hook did not answer") from None

    async def close(self) -> None:
        self.client.close()


def _json(body: bytes | None) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None
