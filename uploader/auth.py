"""Bearer tokens -> owner names (docs/security.md).

The config holds only SHA-256 digests of the tokens. A presented token is
hashed and looked up by its digest; the final equality check runs through
``hmac.compare_digest`` so the answer time does not depend on how many
leading characters matched. Hashing first also makes the lookup itself
independent of the secret: the dict key is a digest an attacker cannot steer.
"""

from __future__ import annotations

import hashlib
import hmac

from .config import AuthConfig
from .errors import UploadError

LOCAL_OWNER = "local"
# Longer tokens are refused before hashing: nobody needs a 4 KiB token and
# it keeps the cost of a bad header bounded.
MAX_TOKEN_LENGTH = 1024


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def unauthorized(message: str) -> UploadError:
    error = UploadError("unauthorized", message)
    # RFC 6750: a 401 names the scheme the client should use.
    error.headers["WWW-Authenticate"] = 'Bearer realm="uploader"'
    return error


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.enabled = config.enabled
        self._owners = {digest: owner for owner, digest in config.tokens.items()}

    def owner_for(self, authorization: str | None) -> str:
        """The owner of this ``Authorization`` header, or 401."""
        if not self.enabled:
            return LOCAL_OWNER
        if not authorization:
            raise unauthorized("an Authorization: Bearer token is required")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            raise unauthorized("an Authorization: Bearer token is required")
        digest = hash_token(token)
        owner = self._owners.get(digest)
        candidate = next(iter(self._owners)) if owner is None else digest
        # Compare even on a miss so a hit and a miss cost the same work.
        if owner is None or not hmac.compare_digest(candidate, digest):
            raise unauthorized("invalid token")
        return owner
