"""Signed download links: a URL that downloads one completed upload without
the bearer token, for a while (``GET /upload/{id}/link``).

The signature is an HMAC-SHA256 with a server secret over the upload id, its
owner and the expiry time. The owner is not in the URL: it is read from the
upload's row when the link is used, so a link opens exactly one upload of
exactly one owner until it expires. Another id, a later expiry or an upload
that belongs to someone else all fail the check, and the failure does not say
which (nor whether the upload exists). Instances behind one load balancer
must share the secret (``links.secret``) for a link made by one to open on
another.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Callable, NamedTuple

from .auth import unauthorized
from .config import Config
from .errors import UploadError

log = logging.getLogger("uploader.links")

# Bumped if what is signed ever changes, so old links fail cleanly.
_DOMAIN = b"uploader-download-link-v1"


def invalid_link(message: str = "download link is invalid") -> UploadError:
    # A 401 like a missing token (with its WWW-Authenticate): the file is
    # still there for whoever has the bearer token or a fresh link.
    return unauthorized(message)


class SignedLink(NamedTuple):
    expires: int      # Unix time after which the link is refused
    expires_in: int   # seconds from now
    signature: str    # hex HMAC-SHA256


class DownloadLinks:
    def __init__(self, secret: bytes, expiry: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = secret
        self.expiry = expiry  # the default and the longest a link may live
        self._clock = clock

    def _signature(self, upload_id: str, owner: str, expires: int) -> str:
        message = b"\n".join([_DOMAIN, upload_id.encode(), owner.encode(), str(expires).encode()])
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, upload_id: str, owner: str, expires_in: int | None = None) -> SignedLink:
        """A link valid ``expires_in`` seconds from now (``expiry`` when None;
        never longer)."""
        ttl = self.expiry if expires_in is None else expires_in
        if not 1 <= ttl <= self.expiry:
            raise UploadError("invalid_request", f"expires_in must be between 1 and {self.expiry}",
                              max_expires_in=self.expiry)
        expires = int(self._clock()) + ttl
        return SignedLink(expires, ttl, self._signature(upload_id, owner, expires))

    def check(self, upload_id: str, owner: str, expires: int, signature: str) -> None:
        """Raises ``unauthorized`` unless the link was made for this upload of
        this owner and has not expired. The signature is checked first (in
        constant time), so a forged link never learns whether it expired."""
        if not hmac.compare_digest(self._signature(upload_id, owner, expires), signature):
            raise invalid_link()
        if self._clock() > expires:
            raise invalid_link("download link has expired: ask for a new one")


def links_from_config(config: Config) -> DownloadLinks:
    secret = config.links.secret.encode()
    if not secret:
        secret = secrets.token_bytes(32)
        if config.locks.backend == "redis":
            # Redis locks mean several instances: each would sign with its own key.
            log.warning("links.secret is empty: download links are signed with a random key of "
                        "this process and fail on the other instances; set the same "
                        "links.secret (UPLOADER_LINKS_SECRET) on every instance")
    return DownloadLinks(secret, config.links.expiry)
