"""What the S3 backend checks of its bucket at start: that it is there and
lets us in (else the configuration is wrong: stop), and in direct mode
whether its CORS rules let the upload page PUT parts (only advice: warn).

Browsers, not this server, enforce CORS: a bucket without the right rule
makes every direct chunk of the page fail as a network error, which the page
would retry forever. So at start, in direct mode, the server reads the rules
(``GetBucketCors``) and warns about what would block the page. It only warns:
the bucket is the operator's, and some stores do not let us look (MinIO's
community edition has one global CORS setting and answers ``NotImplemented``).

What the page sends (docs/s3.md): ``PUT`` with a ``Content-MD5`` header, from
the page's own origin. It needs no response header: the signed Content-MD5
makes the store check the bytes, and the server learns which parts arrived
from ``ListParts``. (Exposing ``ETag`` is harmless and what other browser
tools of S3 multipart uploads need.)
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any, Awaitable, Callable

from botocore.exceptions import ClientError

from ..config import ConfigError, S3Config
from .s3_util import error_code, translate

log = logging.getLogger("uploader.storage")

NO_RULES = ("NoSuchCORSConfiguration",)


async def check_bucket(client: Any, cfg: S3Config) -> None:
    """A bucket that does not exist or refuses our credentials is a
    configuration error (ConfigError): stop at start instead of failing every
    init. Storage that does not answer is an outage: /readyz reports it."""
    try:
        await client.head_bucket(Bucket=cfg.bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status not in (403, 404):
            log.warning("object storage at start: %s", exc)
            return
        what = "does not exist" if status == 404 else "refuses these credentials"
        raise ConfigError(f"s3.bucket {cfg.bucket!r} {what} at "
                          f"{cfg.endpoint_url or 'AWS S3'}", keys=("s3.bucket",)) from None
    except Exception as exc:  # unreachable now; may come back
        log.warning("object storage not reachable at start: %s", translate(exc))


def _matches(patterns: list[str], value: str) -> bool:
    # S3 allows one "*" wildcard per AllowedHeader; names are case-insensitive.
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def cors_problems(rules: list[dict[str, Any]]) -> list[str]:
    """What in these CORS rules would block the page's part PUTs."""
    if not rules:
        return ["the bucket has no CORS rules: browsers cannot PUT parts to it"]
    puts = [r for r in rules if "PUT" in [m.upper() for m in r.get("AllowedMethods", [])]]
    if not puts:
        return ["no CORS rule of the bucket allows PUT: browsers cannot send parts"]
    if not any(_matches(r.get("AllowedHeaders", []), "content-md5") for r in puts):
        return ["no CORS rule of the bucket that allows PUT allows the Content-MD5 header: "
                "browsers cannot send parts"]
    return []


def allowed_origins(rules: list[dict[str, Any]]) -> list[str]:
    return sorted({o for r in rules if "PUT" in [m.upper() for m in r.get("AllowedMethods", [])]
                   for o in r.get("AllowedOrigins", [])})


async def check_bucket_cors(call: Callable[..., Awaitable[Any]], bucket: str) -> list[str]:
    """Read the bucket's CORS rules and log what would block the page;
    returns the blocking problems (for tests). Never raises: the server
    starts either way."""
    try:
        rules = (await call("get_bucket_cors")).get("CORSRules", [])
    except ClientError as exc:
        if error_code(exc) not in NO_RULES:
            log.info("direct uploads: could not read the CORS rules of bucket %s (%s); check "
                     "that they let the page PUT parts with Content-MD5 (docs/s3.md)",
                     bucket, error_code(exc) or exc)
            return []
        rules = []
    except Exception as exc:  # unreachable, timed out: the check is only advice
        log.info("direct uploads: could not read the CORS rules of bucket %s: %r", bucket, exc)
        return []
    blocking = cors_problems(rules)
    for problem in blocking:
        log.warning("direct uploads: %s (bucket %s); the upload page will fail until a rule "
                    "allows it (docs/s3.md)", problem, bucket)
    if not blocking:
        log.info("direct uploads: bucket %s lets pages from %s PUT parts", bucket,
                 ", ".join(allowed_origins(rules)) or "no origin")
    return blocking
