"""A Python client for the uploader wire format (docs/architecture.md: wire format).

Standard library only, on purpose: a user may copy this one file next to a
script, so it must not import Tornado or anything else the server needs (and
must not import the rest of the ``uploader`` package either).

Like curl and pip it honours ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``
and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (or ``cacert=``), and a download
follows redirects (S3 answers with one to a presigned URL); the bearer token
is sent to the server's own origin only.

    client = UploadClient("http://127.0.0.1:8888", token=None, parallel=4)
    upload = client.upload("big.iso", progress=lambda sent, total: ...)
    client.download(upload["upload_id"], "copy.iso")
"""

from __future__ import annotations

import base64
import email.utils
import contextlib
import errno
import hashlib
import http.client
import json
import os
import random
import re
import select
import socket
import ssl
import stat
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, Union

KiB, MiB = 1 << 10, 1 << 20
DEFAULT_CHUNK_SIZE = 8 * MiB
PART_URL_BATCH = 16          # direct mode: presigned URLs asked for at once (server max 100)
MAX_CHUNKS = 10_000          # server default limits.max_chunks
MAX_CHUNK_SIZE = 64 * MiB    # server default limits.chunk_size_max
LIST_PAGE = 1000             # uploads per GET /uploads page (the server's maximum)
_READ = 1 * MiB              # piece size for streaming hashes and downloads
# Seconds a chunk PUT waits for "100 Continue" before it sends the body anyway
# (a server or proxy that ignores Expect); curl waits as long.
EXPECT_WAIT = 1.0
_REDIRECTS = (301, 302, 303, 307, 308)
CUT_AGAIN = 0.2  # seconds between cuts while workers end after Ctrl-C
MAX_REDIRECTS = 5

Progress = Callable[[int, int], None]


class UploadClientError(Exception):
    """A failed call: ``code`` from the server's error table (or ``network``,
    ``changed``, ``timeout`` for failures seen only here), the HTTP ``status``
    (0 when no response came), the ``message`` and the error's other fields."""

    def __init__(self, code: str, status: int, message: str,
                 details: dict[str, Any] | None = None, retry_after: float | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.code, self.status, self.message = code, status, message
        self.details = details or {}
        self.retry_after = retry_after
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        if self._retryable is not None:  # known better where it was raised
            return self._retryable
        # As the wire format says: network errors, 5xx, 429, and 409 "conflict"
        # (a merge is running); never another 4xx, which would fail the same way,
        # nor a certificate the client does not trust ("tls").
        return (self.status == 0 and self.code == "network") or self.status >= 500 \
            or self.status == 429 or (self.status == 409 and self.code == "conflict")


class ResumeState(Protocol):
    """Where :meth:`UploadClient.upload` keeps the id of an unfinished upload
    between runs (the CLI stores it in a JSON file keyed by fingerprint)."""

    def load(self) -> str | None: ...
    def save(self, upload_id: str) -> None: ...
    def clear(self) -> None: ...


def choose_chunk_size(size: int, chunk_size: int, max_chunks: int = MAX_CHUNKS) -> int:
    """Double ``chunk_size`` until the file fits in ``max_chunks`` chunks."""
    while -(-size // chunk_size) > max_chunks and chunk_size < MAX_CHUNK_SIZE:
        chunk_size *= 2
    return chunk_size


def retry_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): the server's
    Retry-After when it sent one, else capped exponential backoff with
    jitter (so many clients failing together do not retry in lockstep)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), max(cap, 60.0))
    return min(cap, base * (2 ** attempt)) * random.uniform(0.5, 1.0)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:  # the HTTP-date form
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Origin:
    """Where requests for one scheme://host:port go: straight there or through
    the proxy the environment names for it (``HTTP(S)_PROXY``, unless
    ``NO_PROXY`` matches), https with the client's TLS context."""

    def __init__(self, url: urllib.parse.SplitResult, tls: Callable[[], ssl.SSLContext]) -> None:
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {url.geturl()!r}")
        self.scheme, self.host = url.scheme, url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.key = (self.scheme, self.host.lower(), self.port)
        self._tls = tls
        self.proxy = _proxy_for(url.scheme, self.host)
        self.proxy_headers: dict[str, str] = {}
        if self.proxy is not None and self.proxy.username is not None:
            creds = f"{urllib.parse.unquote(self.proxy.username)}:" \
                    f"{urllib.parse.unquote(self.proxy.password or '')}"
            self.proxy_headers["Proxy-Authorization"] = \
                "Basic " + base64.b64encode(creds.encode()).decode()

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self.host, self.port
        if self.proxy is not None:
            host, port = self.proxy.hostname or "", self.proxy.port or 80
        if self.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls())
        if self.proxy is not None:  # CONNECT: TLS runs end to end through the proxy
            conn.set_tunnel(self.host, self.port, headers=self.proxy_headers)
        return conn

    def target(self, path: str) -> tuple[str, dict[str, str]]:
        """The request target and extra headers: through a plain-HTTP proxy
        the request line carries the absolute URL and the proxy's credentials."""
        if self.proxy is not None and self.scheme == "http":
            netloc = self.host if ":" not in self.host else f"[{self.host}]"
            return f"http://{netloc}:{self.port}{path}", self.proxy_headers
        return path, {}


def _proxy_for(scheme: str, host: str) -> urllib.parse.SplitResult | None:
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if proxy.scheme != "http" or not proxy.hostname:
        raise ValueError(f"{scheme}_proxy must be http://[user:password@]host:port, not {url!r}")
    return proxy


def tls_context(cacert: str | None = None) -> ssl.SSLContext:
    """The CAs to trust: ``cacert``, else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``,
    else the system's. Named explicitly so every platform reads the variables."""
    cafile = cacert or os.environ.get("SSL_CERT_FILE") or None
    capath = None if cacert else os.environ.get("SSL_CERT_DIR") or None
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _transport_error(what: str, exc: BaseException) -> "UploadClientError":
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UploadClientError("tls", 0, f"{what}: {exc.verify_message or exc} (trust the "
                                 f"server's CA with --cacert FILE or SSL_CERT_FILE)")
    return UploadClientError("network", 0, f"{what}: {exc!r}")


class _Local(threading.local):
    def __init__(self) -> None:
        # This thread's keep-alive connection to each origin (by _Origin.key):
        # the server, and in direct mode the object store.
        self.conns: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self.buf: bytearray | None = None


class UploadClient:
    def __init__(self, base_url: str, token: str | None = None, parallel: int = 4,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, retries: int = 8, timeout: float = 60.0,
                 backoff: float = 0.5, backoff_max: float = 30.0,
                 merge_timeout: float = 3600.0, cacert: str | None = None) -> None:
        url = urllib.parse.urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], not {base_url!r}")
        self.base_url, self._url = base_url.rstrip("/"), url
        self.cacert = cacert
        self._tls: ssl.SSLContext | None = None
        if cacert is not None:
            self._tls_context()  # a missing or unreadable CA file fails here, not mid-upload
        self._origin = _Origin(url, self._tls_context)
        self.token, self.parallel, self.chunk_size = token, max(1, parallel), chunk_size
        self.retries, self.timeout = retries, timeout
        self.backoff, self.backoff_max, self.merge_timeout = backoff, backoff_max, merge_timeout
        self._local = _Local()  # keep-alive connections (and a chunk buffer) per thread
        # Every open connection, whichever thread owns it, so close() can close
        # them all; the worker pool lives as long as the client so its
        # connections are kept alive from one file to the next.
        self._conns: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the worker threads and close every connection. Idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()

    def __enter__(self) -> "UploadClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- HTTP layer ---------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = tls_context(self.cacert)
        return self._tls

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        conn = origin.connect(self.timeout)
        with self._lock:
            self._conns.add(conn)
        return conn

    def _abort_connections(self) -> None:
        """Cut every open connection now (Ctrl-C): a worker blocked sending a
        chunk or waiting for its answer wakes with an error at once."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _wait_cutting(self, futures: Sequence[Future[Any]]) -> None:
        """Wait for the workers to end, cutting their connections until they
        do (Ctrl-C). Once is not enough: a worker that had just passed its
        last check may open a connection after the first cut and then wait
        for an answer that a stalled server or proxy never sends."""
        while True:
            self._abort_connections()
            if not wait(futures, timeout=CUT_AGAIN).not_done:
                return

    def _once(self, method: str, route: str, body: Any = None,
              headers: dict[str, str] | None = None, cancel: threading.Event | None = None,
              *, expect_continue: bool = False) -> tuple[int, http.client.HTTPResponse]:
        """One request to the server on this thread's connection; the caller
        reads the body. ``expect_continue``: see :func:`_request_expecting_continue`."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        return self._exchange(self._origin, method, self._url.path + route, body, hdrs,
                              cancel, what=f"{method} {route}", expect_continue=expect_continue)

    def _foreign(self, method: str, url: str, body: Any = None,
                 headers: dict[str, str] | None = None, cancel: threading.Event | None = None
                 ) -> tuple[int, http.client.HTTPResponse]:
        """One request to another origin (a presigned URL of the object store)
        on this thread's keep-alive connection to it; never with our token,
        which is for the server alone."""
        parts = urllib.parse.urlsplit(url)
        try:
            origin = _Origin(parts, self._tls_context)
        except ValueError as exc:
            raise UploadClientError("http_error", 0, f"refused URL: {exc}") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Never the query in a message: it carries the URL's signature.
        return self._exchange(origin, method, path, body, dict(headers or {}), cancel,
                              what=f"{method} {parts.scheme}://{parts.netloc}{parts.path}")

    def _exchange(self, origin: _Origin, method: str, path: str, body: Any,
                  headers: dict[str, str], cancel: threading.Event | None, *, what: str,
                  expect_continue: bool = False) -> tuple[int, http.client.HTTPResponse]:
        """A keep-alive connection the peer closed while idle fails on first
        use; that is not a real failure, so it is retried at once on a fresh
        connection, outside the backoff (unless ``cancel`` is set: then the
        connection was cut on purpose)."""
        conns = self._local.conns
        if origin.key in conns and conns[origin.key] not in self._conns:
            del conns[origin.key]  # closed by close(): open a new, registered one
        for fresh in (False, True):
            reused = origin.key in conns and not fresh
            if origin.key not in conns or fresh:
                self._close(origin)
                conns[origin.key] = self._connect(origin)
            conn = conns[origin.key]
            target, extra = origin.target(path)
            try:
                if expect_continue and not isinstance(conn, http.client.HTTPSConnection):
                    _request_expecting_continue(conn, method, target, body,
                                                {**headers, **extra})
                else:
                    conn.request(method, target, body=body, headers={**headers, **extra})
                resp = conn.getresponse()
                return resp.status, resp
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._close(origin)
                if not reused or (cancel is not None and cancel.is_set()):
                    raise _transport_error(what, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._close(origin)
                raise _transport_error(what, exc) from exc
        raise AssertionError("unreachable")

    def _get(self, route: str, headers: dict[str, str]
             ) -> tuple[int, http.client.HTTPResponse, Callable[[], None]]:
        """GET ``route``, following redirects (S3's presigned download on another
        host). Returns the final status, response and a function that closes
        the connection a redirect opened. The token goes to the server's own
        origin only: a presigned URL carries its own authority, and a bearer
        token must not leak to a third party."""
        status, resp = self._once("GET", route, None, headers)
        url, done = self.base_url + route, _nothing
        for _hop in range(MAX_REDIRECTS + 1):
            location = resp.getheader("Location")
            if status not in _REDIRECTS or not location:
                return status, resp, done
            resp.read()
            done()
            url = urllib.parse.urljoin(url, location)
            status, resp, done = self._request_url("GET", url, headers)
        done()
        raise UploadClientError("http_error", status, f"more than {MAX_REDIRECTS} redirects")

    def _request_url(self, method: str, url: str, headers: dict[str, str]
                     ) -> tuple[int, http.client.HTTPResponse, Callable[[], None]]:
        """One request to an absolute URL on a connection of its own."""
        parts = urllib.parse.urlsplit(url)
        try:
            origin = _Origin(parts, self._tls_context)
        except ValueError as exc:
            raise UploadClientError("http_error", 0, f"redirect refused: {exc}") from None
        hdrs = {"Accept": "application/json", **headers}
        if self.token and origin.key == self._origin.key:
            hdrs["Authorization"] = f"Bearer {self.token}"
        conn = origin.connect(self.timeout)
        with self._lock:
            self._conns.add(conn)

        def done() -> None:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target, extra = origin.target(path)
        try:
            conn.request(method, target, headers={**hdrs, **extra})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            done()
            raise _transport_error(f"{method} {parts.scheme}://{parts.netloc}", exc) from exc
        return resp.status, resp, done

    def _close(self, origin: _Origin | None = None) -> None:
        """Drop this thread's connection to ``origin`` (the server's by default)."""
        conn = self._local.conns.pop((origin or self._origin).key, None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._conns.discard(conn)

    @staticmethod
    def _error(status: int, resp: http.client.HTTPResponse, data: bytes) -> UploadClientError:
        retry_after = _parse_retry_after(resp.getheader("Retry-After"))
        try:
            err = dict(json.loads(data)["error"])
            code, message = str(err.pop("code")), str(err.pop("message", ""))
        except (ValueError, KeyError, TypeError):
            err, code = {}, {404: "not_found", 429: "rate_limited", 503: "unavailable"}.get(
                status, "internal" if status >= 500 else "http_error")
            message = data[:200].decode("utf-8", "replace") or resp.reason
        return UploadClientError(code, status, message, err, retry_after)

    def _retrying(self, fn: Callable[[], Any], note: Callable[[str], None] | None = None,
                  cancel: threading.Event | None = None) -> Any:
        """Run ``fn`` until it succeeds, raises a non-retryable error, or the
        retries are used up; ``cancel`` set (another chunk failed, Ctrl-C)
        ends the waiting and the retrying at once."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except UploadClientError as exc:
                if not exc.retryable or attempt == self.retries \
                        or (cancel is not None and cancel.is_set()):
                    raise
                delay = retry_delay(attempt, self.backoff, self.backoff_max, exc.retry_after)
                if note:
                    note(f"retry {attempt + 1}/{self.retries} in {delay:.2f} s after {exc}")
                if cancel is None:
                    time.sleep(delay)
                elif cancel.wait(delay):
                    raise
        raise AssertionError("unreachable")

    def _json(self, method: str, route: str, payload: Any = None,
              ok: Iterable[int] = (200,)) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}

        def call() -> tuple[int, Any]:
            status, resp = self._once(method, route, body, headers)
            try:
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                raise UploadClientError("network", 0, f"{method} {route}: {exc!r}") from exc
            if status not in ok:
                raise self._error(status, resp, data)
            return status, (json.loads(data) if data else None)
        return self._retrying(call)

    # ---- simple calls ---------------------------------------------------------------

    def status(self, upload_id: str) -> dict[str, Any]:
        return self._json("GET", f"/upload/{_q(upload_id)}/status")[1]

    def delete(self, upload_id: str) -> None:
        self._json("DELETE", f"/upload/{_q(upload_id)}", ok=(204,))

    def link(self, upload_id: str, expires_in: int | None = None) -> str:
        """An absolute URL that downloads the completed upload without the
        token until it expires (the server's ``links.expiry`` at most)."""
        query = f"?expires_in={int(expires_in)}" if expires_in else ""
        doc = self._json("GET", f"/upload/{_q(upload_id)}/link{query}")[1]
        return urllib.parse.urljoin(self.base_url + "/", doc["url"].lstrip("/"))

    def list_page(self, status: str | None = None, filename: str | None = None, *,
                  limit: int | None = None, cursor: str | None = None
                  ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``GET /uploads``, newest first: (uploads, next_cursor);
        next_cursor is None on the last page, else pass it back as ``cursor``.
        ``limit`` 1..1000 (the server's default: 100)."""
        params = (("status", status), ("filename", filename),
                  ("limit", None if limit is None else str(int(limit))), ("cursor", cursor))
        query = urllib.parse.urlencode({k: v for k, v in params if v is not None})
        doc = self._json("GET", "/uploads" + (f"?{query}" if query else ""))[1]
        return doc["uploads"], doc.get("next_cursor")

    def iter_uploads(self, status: str | None = None, filename: str | None = None, *,
                     limit: int | None = None,
                     page_size: int = LIST_PAGE) -> Iterator[dict[str, Any]]:
        """Every upload (or the newest ``limit``), newest first, fetched a page
        of ``page_size`` (1..1000) at a time as the iteration goes."""
        cursor: str | None = None
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(left, page_size)
            uploads, cursor = self.list_page(status, filename, limit=size, cursor=cursor)
            yield from uploads
            if left is not None:
                left -= len(uploads)
            if cursor is None:
                return

    def list(self, status: str | None = None, filename: str | None = None, *,
             limit: int | None = None, page_size: int = LIST_PAGE) -> list[dict[str, Any]]:
        """All of your uploads (every page), or the newest ``limit``."""
        return list(self.iter_uploads(status, filename, limit=limit, page_size=page_size))

    # ---- upload -----------------------------------------------------------------------

    def upload(self, path: str | os.PathLike[str], *, progress: Progress | None = None,
               resume_state: Union[ResumeState, str, None] = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Upload ``path`` and return the completed upload object.

        ``resume_state``: an upload id to continue, or a :class:`ResumeState`
        that is read first, saved as soon as the upload has an id (so a killed
        process can resume) and cleared once it is completed. An id the server
        no longer knows, or an aborted/failed/different upload, starts afresh.
        ``log`` receives one-line notes (resumed, retries, chunk counts)."""
        note = log or (lambda _msg: None)
        path = os.fspath(path)
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UploadClientError("invalid_request", 0, f"{path} is not a regular file")
        # The whole-file MD5 is hashed in its own thread while chunks are sent:
        # the two overlap on a multi-core machine, and it is needed only at complete.
        md5_box: dict[str, Any] = {"stop": threading.Event()}
        hasher = threading.Thread(target=_md5_file, args=(path, md5_box), daemon=True)
        hasher.start()
        try:
            upload = self._open(path, st.st_size, resume_state, hasher, md5_box, note)
            upload = self._finish(path, st, upload, hasher, md5_box, progress, note)
        finally:
            md5_box["stop"].set()  # a failed upload must not leave it reading the file
        if resume_state is not None and not isinstance(resume_state, str):
            resume_state.clear()
        return upload

    def _finish(self, path: str, st: os.stat_result, upload: dict[str, Any],
                hasher: threading.Thread, md5_box: dict[str, Any], progress: Progress | None,
                note: Callable[[str], None]) -> dict[str, Any]:
        """Send what the server lacks and complete; a chunk the server lost
        meanwhile ("incomplete") is re-sent, a few rounds at most."""
        size = st.st_size
        for _round in range(3):
            if upload["status"] == "completed":
                break
            missing = sorted(set(range(upload["total_chunks"])) - set(upload["received"]))
            note(f"upload {upload['upload_id']}: {upload['total_chunks'] - len(missing)}"
                 f"/{upload['total_chunks']} chunks on the server, sending {len(missing)}")
            send = self._send_direct if upload.get("direct") else self._send_chunks
            send(path, upload, missing, progress, size, note)
            now = os.stat(path)
            if (now.st_mtime_ns, now.st_size) != (st.st_mtime_ns, size):
                raise UploadClientError("changed", 0, f"{path} changed during the upload")
            hasher.join()
            if "error" in md5_box:
                raise md5_box["error"]
            note(f"all chunks sent; completing {upload['upload_id']} (the server merges"
                 " and checks the MD5)")
            try:
                upload = self._complete(upload["upload_id"], md5_box["md5"])
            except UploadClientError as exc:
                if exc.code != "incomplete":
                    raise
                upload = self.status(upload["upload_id"])
        if upload["status"] != "completed":
            raise UploadClientError("incomplete", 409, "chunks keep going missing on the server")
        if progress:
            progress(size, size)
        if upload.get("verified") == "parts":
            note(f"upload {upload['upload_id']} completed, verified part by part "
                 f"(md5 {upload.get('md5_claimed')} not read back)")
        else:
            note(f"upload {upload['upload_id']} completed, md5 {upload['md5']}")
        return upload

    def _open(self, path: str, size: int, resume_state: Union[ResumeState, str, None],
              hasher: threading.Thread, md5_box: dict[str, Any],
              note: Callable[[str], None]) -> dict[str, Any]:
        """The upload to continue (if ``resume_state`` names a usable one) or a new one."""
        old_id = resume_state if isinstance(resume_state, str) else \
            resume_state.load() if resume_state is not None else None
        if old_id:
            try:
                upload = self.status(old_id)
            except UploadClientError as exc:
                if exc.code != "not_found":
                    raise
                upload = None
                note(f"upload {old_id} is unknown to the server: starting afresh")
            if upload is not None and upload["size"] == size \
                    and upload["status"] in ("in_progress", "merging", "completed"):
                if upload["status"] == "merging":
                    upload = self._wait_merge(old_id)
                if upload["status"] == "completed":
                    hasher.join()  # completed earlier: ours only if the bytes match
                    # Verified by parts, it holds the MD5 its client claimed
                    # (ours, if it is ours): as good a test of "same bytes".
                    if (upload.get("md5") or upload.get("md5_claimed")) == md5_box.get("md5"):
                        return upload
                    note(f"upload {old_id} completed with other bytes: starting afresh")
                else:
                    note(f"resuming upload {old_id}")
                    return upload
            elif upload is not None:
                note(f"upload {old_id} is {upload['status']}: starting afresh")
        chunk_size = choose_chunk_size(size, self.chunk_size)
        _, upload = self._json("POST", "/upload/init", {
            "filename": os.path.basename(path), "size": size, "chunk_size": chunk_size}, ok=(201,))
        note(f"created upload {upload['upload_id']} ({upload['total_chunks']} chunks"
             f" of {upload['chunk_size']} bytes)")
        if resume_state is not None and not isinstance(resume_state, str):
            resume_state.save(upload["upload_id"])
        return upload

    def _send_chunks(self, path: str, upload: dict[str, Any], missing: Sequence[int],
                     progress: Progress | None, size: int, note: Callable[[str], None]) -> None:
        chunk_size = upload["chunk_size"]
        lock, failed = threading.Lock(), threading.Event()
        sent = [size - sum(min(chunk_size, size - i * chunk_size) for i in missing)]
        if progress:
            progress(sent[0], size)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

        def one(index: int) -> None:
            if failed.is_set():
                return  # another chunk failed for good: stop starting new ones
            length = min(chunk_size, size - index * chunk_size)
            # One reusable buffer per worker keeps memory at parallel x chunk_size.
            if self._local.buf is None or len(self._local.buf) < chunk_size:
                self._local.buf = bytearray(chunk_size)
            view = memoryview(self._local.buf)[:length]
            _pread_into(fd, view, index * chunk_size)
            md5 = hashlib.md5(view).hexdigest()
            route = f"/upload/{upload['upload_id']}/chunk?index={index}&md5={md5}"
            hdrs = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}

            def put() -> None:
                status, resp = self._once("PUT", route, view, hdrs, cancel=failed,
                                          expect_continue=True)
                data = resp.read()
                if status != 200:
                    raise self._error(status, resp, data)
            try:
                self._retrying(put, note, cancel=failed)
            except BaseException:
                failed.set()
                raise
            if progress:
                with lock:  # the callback sees monotonic totals, one call at a time
                    sent[0] += length
                    progress(sent[0], size)

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="upload")
            pool = self._pool
        futures = [pool.submit(one, i) for i in missing]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
        except KeyboardInterrupt:
            failed.set()
            self._wait_cutting(futures)  # chunks cut mid-body are discarded by the server
            raise
        finally:
            failed.set()  # on error or Ctrl-C: no new chunks; the running ones end
            for fut in futures:
                fut.cancel()
            wait(futures)
            os.close(fd)

    def _send_direct(self, path: str, upload: dict[str, Any], missing: Sequence[int],
                     progress: Progress | None, size: int, note: Callable[[str], None]) -> None:
        """Direct mode: every chunk goes to the object store through a
        presigned URL, none through the server. This thread hashes the
        missing chunks in order and hands them to the workers, a window
        ahead, so that URLs are asked for in batches of the chunks waiting
        (and the same chunk's bytes are read again to send them)."""
        chunk_size = upload["chunk_size"]
        urls = _PartUrls(self, upload["upload_id"])
        lock, failed = threading.Lock(), threading.Event()
        waiting: dict[int, str] = {}  # hashed and handed over, not yet being sent
        room = threading.Semaphore(self.parallel + PART_URL_BATCH)
        sent = [size - sum(min(chunk_size, size - i * chunk_size) for i in missing)]
        if progress:
            progress(sent[0], size)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

        def ahead() -> list[tuple[int, str]]:
            with lock:
                return list(waiting.items())

        def one(index: int, md5: str) -> None:
            held = [True]  # this chunk's room in the window, given back once

            def free() -> None:
                if held.pop() if held else False:
                    room.release()
            try:
                with lock:
                    waiting.pop(index, None)
                if failed.is_set():
                    return
                length = min(chunk_size, size - index * chunk_size)
                if self._local.buf is None or len(self._local.buf) < chunk_size:
                    self._local.buf = bytearray(chunk_size)
                view = memoryview(self._local.buf)[:length]
                _pread_into(fd, view, index * chunk_size)

                def put() -> None:
                    part = urls.get(index, md5, ahead)
                    status, resp = self._foreign(part["method"], part["url"], view,
                                                 {**part["headers"], "Content-Length": str(length)},
                                                 cancel=failed)
                    data = resp.read()
                    if status == 200:
                        return
                    if status == 403:
                        urls.drop(index)  # expired (or the clock is off): a new one next time
                    raise _store_error(status, data, index)
                self._retrying(put, note, cancel=failed)
                free()  # before the progress callback, which may take its time
                if progress:
                    with lock:
                        sent[0] += length
                        progress(sent[0], size)
            except BaseException:
                failed.set()
                raise
            finally:
                free()

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="upload")
            pool = self._pool
        futures = []
        buf = bytearray(chunk_size)
        try:
            for index in missing:
                room.acquire()
                if failed.is_set():
                    break
                view = memoryview(buf)[:min(chunk_size, size - index * chunk_size)]
                _pread_into(fd, view, index * chunk_size)
                md5 = hashlib.md5(view).hexdigest()
                with lock:
                    waiting[index] = md5
                futures.append(pool.submit(one, index, md5))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
        except KeyboardInterrupt:
            failed.set()
            self._wait_cutting(futures)  # a part cut mid-body is not stored
            raise
        finally:
            failed.set()
            for fut in futures:
                fut.cancel()
            wait(futures)
            os.close(fd)

    def _complete(self, upload_id: str, md5: str) -> dict[str, Any]:
        status, upload = self._json("POST", f"/upload/{upload_id}/complete", {"md5": md5},
                                    ok=(200, 202))
        return self._wait_merge(upload_id) if status == 202 else upload

    def _wait_merge(self, upload_id: str) -> dict[str, Any]:
        """Poll status while the server merges (after a 202): completed, or an error."""
        deadline, delay = time.monotonic() + self.merge_timeout, 0.1
        while True:
            upload = self.status(upload_id)
            if upload["status"] == "completed":
                return upload
            if upload["status"] != "merging":
                err = dict(upload.get("error") or {"code": "internal", "message": "merge failed"})
                raise UploadClientError(str(err.pop("code", "internal")), 0,
                                        str(err.pop("message", "")), err)
            if time.monotonic() > deadline:
                raise UploadClientError("timeout", 0, f"upload {upload_id} still merging")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # ---- download ---------------------------------------------------------------------

    def download(self, upload_id: str, dest_path: str | os.PathLike[str],
                 progress: Progress | None = None) -> str:
        """Stream the completed file to ``dest_path`` (via a temp file in the same
        folder, renamed at the end so a half-written file never has the final
        name). A partial temp file from an earlier attempt is continued with
        Range; the result is checked against the upload's MD5."""
        dest = os.path.abspath(os.fspath(dest_path))
        if os.path.isdir(dest):  # refused now, not after the whole file came
            raise IsADirectoryError(errno.EISDIR, "is a folder", dest)
        meta = self.status(upload_id)
        part = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{upload_id}.part")
        md5 = [hashlib.md5()]  # a box: a refused Range restarts the hash
        with open(part, "ab+") as out:  # append mode: every write lands at the end
            out.seek(0)
            while piece := out.read(_READ):  # re-hash what an earlier run wrote
                md5[0].update(piece)
            if out.tell() > meta["size"]:  # not ours after all
                out.truncate(0)
                md5[0] = hashlib.md5()

            def fetch() -> None:
                have = out.tell()
                if have == meta["size"]:
                    return
                status, resp, done = self._get(f"/files/{_q(upload_id)}",
                                               {"Range": f"bytes={have}-"} if have else {})
                try:
                    if status == 200 and have:  # the server ignored Range: start over
                        out.truncate(0)
                        md5[0] = hashlib.md5()
                    elif status not in (200, 206):
                        raise self._error(status, resp, resp.read())
                    try:
                        while piece := resp.read(_READ):
                            out.write(piece)
                            md5[0].update(piece)
                            if progress:
                                progress(out.tell(), meta["size"])
                    except (OSError, http.client.HTTPException) as exc:
                        self._close()
                        raise UploadClientError("network", 0, f"download: {exc!r}") from exc
                    if out.tell() != meta["size"]:
                        self._close()
                        raise UploadClientError("network", 0, "download cut short")
                finally:
                    done()
            self._retrying(fetch)
            out.flush()
            os.fsync(out.fileno())
        digest = md5[0].hexdigest()
        # Verified by parts, the server never hashed the file: the uploader's
        # claimed MD5 is checked here, end to end, instead.
        expected = meta.get("md5") or meta.get("md5_claimed")
        if expected and digest != expected:
            os.unlink(part)
            raise UploadClientError("checksum_mismatch", 0,
                                    f"downloaded {digest}, expected {expected}")
        os.replace(part, dest)
        return dest


def _request_expecting_continue(conn: http.client.HTTPConnection, method: str, url: str,
                                body: Any, headers: dict[str, str]) -> None:
    """Send the headers with ``Expect: 100-continue`` and the body only once
    the server answers 100 (RFC 9110 10.1.1), or after EXPECT_WAIT seconds of
    silence. A refusal (401, 404, 409, 413, 507) then arrives instead of the
    100 and costs no chunk bytes; getresponse() reads it, or skips the 100.
    Plain HTTP only: telling a 100 from a final answer needs a peek at the
    socket, which TLS sockets do not offer."""
    conn.putrequest(method, url)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    sock = conn.sock
    if sock is None or not select.select([sock], [], [], EXPECT_WAIT)[0]:
        conn.send(body)
        return
    try:
        # Peeked, not read: http.client parses the answer itself.
        head = sock.recv(12, socket.MSG_PEEK | getattr(socket, "MSG_WAITALL", 0))
    except OSError:  # a platform without peeking: behave as without Expect
        head = b"HTTP/1.1 100"
    if head[9:12] == b"100":
        conn.send(body)


def _nothing() -> None:
    pass


def _q(upload_id: str) -> str:
    return urllib.parse.quote(upload_id, safe="")


_SEEK_LOCK = threading.Lock()


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset`` without a copy and without the
    shared file position (workers read different chunks of one descriptor)."""
    got = 0
    while got < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[got:]], offset + got)
        else:  # Windows: no positional reads, so share the position under a lock
            with _SEEK_LOCK:
                os.lseek(fd, offset + got, os.SEEK_SET)
                data = os.read(fd, len(view) - got)
            view[got:got + len(data)] = data
            n = len(data)
        if n == 0:
            raise UploadClientError("changed", 0, "file got shorter during the upload")
        got += n


def _md5_file(path: str, box: dict[str, Any]) -> None:
    try:
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while piece := f.read(_READ):
                if box["stop"].is_set():
                    return
                md5.update(piece)
        box["md5"] = md5.hexdigest()
    except Exception as exc:  # handed to the uploading thread
        box["error"] = exc


class _PartUrls:
    """Presigned part URLs of one direct upload: asked for in batches (the
    chunk needed now plus those hashed and waiting) and renewed before they
    expire, by the ``expires_in`` the server gives. One fetch at a time: a
    worker that needs a URL of the batch being fetched waits for it."""

    def __init__(self, client: UploadClient, upload_id: str) -> None:
        self._client, self._route = client, f"/upload/{_q(upload_id)}/urls"
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[str, float, dict[str, Any]]] = {}  # index -> md5, until, part

    def _fresh(self, index: int, md5: str) -> dict[str, Any] | None:
        hit = self._cache.get(index)
        return hit[2] if hit and hit[0] == md5 and time.monotonic() < hit[1] else None

    def get(self, index: int, md5: str,
            ahead: Callable[[], list[tuple[int, str]]]) -> dict[str, Any]:
        with self._lock:
            part = self._fresh(index, md5)
            if part is not None:
                return part
            want = [(index, md5)] + [(i, m) for i, m in ahead()
                                     if i != index and self._fresh(i, m) is None]
            want = want[:PART_URL_BATCH]
            asked = time.monotonic()
            _, doc = self._client._json("POST", self._route, {
                "parts": [{"index": i, "md5": m} for i, m in want]})
            md5s = dict(want)
            for part in doc["parts"]:
                life = float(part["expires_in"])
                # Used before its end, with room for a slow start of the PUT.
                until = asked + life - min(30.0, life / 4)
                self._cache[int(part["index"])] = (md5s[int(part["index"])], until, part)
            return self._cache[index][2]

    def drop(self, index: int) -> None:
        with self._lock:
            self._cache.pop(index, None)


def _store_error(status: int, body: bytes, index: int) -> UploadClientError:
    """An object store's refusal of a part PUT (an S3 XML error)."""
    code = re.search(rb"<Code>([^<]{1,100})</Code>", body)
    store_code = code.group(1).decode("utf-8", "replace") if code else str(status)
    message = f"object store refused chunk {index}: {store_code}"
    if store_code in ("BadDigest", "InvalidDigest"):
        return UploadClientError("changed", status, f"chunk {index} changed during the upload",
                                 {"store_code": store_code}, retryable=False)
    if store_code in ("NoSuchUpload", "NoSuchKey"):
        return UploadClientError("conflict", status, message + " (the upload is closed there)",
                                 {"store_code": store_code}, retryable=False)
    # 403: the URL expired or the clocks disagree (a new URL is asked for);
    # 5xx, SlowDown: the store is busy. Anything else is a refusal.
    return UploadClientError("store_error", status, message, {"store_code": store_code},
                             retryable=status == 403 or status >= 500 or status == 429)
