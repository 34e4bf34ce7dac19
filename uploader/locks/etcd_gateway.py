"""A small asyncio client for etcd's v3 HTTP/JSON gateway (``/v3/...``).

etcd serves its gRPC API as JSON on the client port as well (every etcd
since 3.4 at ``/v3/``): POST a request message as JSON, get the response
message back. Bytes travel as base64, 64-bit integers as strings. Only the
calls the locks need are used: lease grant/keepalive/revoke, lock/lock, a
transaction, and ``/health``.

Why not a gRPC client library: the Python ones are either unmaintained or
poll for locks without exposing the revision (aetcd's ``Lock``), and each
brings grpcio and a pinned protobuf. Why aiohttp and not Tornado's client:
the gateway ends its error answers with HTTP trailers, which Tornado's
client cannot parse (it reports "Connection closed" instead of the error).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# gRPC codes that mean "not now": UNAVAILABLE, DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED ("too many requests"), ABORTED.
_TRANSIENT_CODES = {14, 4, 8, 10}
NOT_FOUND = 5
_DOWN = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class EtcdUnavailable(Exception):
    """No endpoint answered, or the cluster cannot serve now (no leader)."""


class EtcdError(Exception):
    """etcd answered with an error (e.g. NOT_FOUND for an expired lease)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, gRPC code {code})")
        self.status, self.code, self.message = status, code, message


def b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def unb64(value: str) -> str:
    return base64.b64decode(value).decode()


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix``
    (its last byte plus one; prefixes here are ASCII and never end in 0xff)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


class EtcdGateway:
    """Endpoints are tried in order; the last one that answered is tried
    first next time (the members of one cluster all serve every call)."""

    def __init__(self, endpoints: list[str], *, connect_timeout: float = 3.0,
                 request_timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        # Two sessions: lock requests block (a long poll until granted) and
        # must never keep a keep-alive or a release waiting for a connection.
        # Made on first use: aiohttp wants a running event loop.
        self._calls: aiohttp.ClientSession | None = None
        self._waits: aiohttp.ClientSession | None = None

    def _session(self, waits: bool) -> aiohttp.ClientSession:
        if waits:
            if self._waits is None:
                self._waits = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            return self._waits
        if self._calls is None:
            self._calls = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self._calls

    async def call(self, path: str, body: dict[str, Any], *, timeout: float | None = None,
                   waits: bool = False) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers.

        Raises :class:`EtcdUnavailable` when none does (or the cluster says
        it cannot serve), :class:`EtcdError` for other error answers. A lock
        request (``waits``) goes to one endpoint only, the one that granted
        its lease just before: it must never be sent twice. Other calls get
        a second try on one endpoint (a pooled connection may have died).
        """
        session = self._session(waits)
        limit = aiohttp.ClientTimeout(total=timeout or self.request_timeout,
                                      sock_connect=self.connect_timeout)
        failure: BaseException | None = None
        attempts = 1 if waits else max(2, len(self.endpoints))
        for attempt in range(attempts):
            index = (self._current + attempt) % len(self.endpoints)
            try:
                async with session.post(self.endpoints[index] + path, json=body,
                                        timeout=limit) as response:
                    status, raw = response.status, await response.read()
            except _DOWN as exc:
                failure = exc
                continue
            self._current = index
            return self._decode(status, raw, response.reason or "")
        raise EtcdUnavailable(str(failure) or type(failure).__name__)

    @staticmethod
    def _decode(status: int, raw: bytes, reason: str) -> dict[str, Any]:
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {}
        if status == 200:
            return doc
        code = int(doc.get("code", 0))
        message = str(doc.get("message", reason))
        if code in _TRANSIENT_CODES or status in (502, 503, 504):
            raise EtcdUnavailable(message)
        raise EtcdError(status, code, message)

    async def healthy(self, timeout: float) -> bool:
        """``GET /health`` on any endpoint: true when the cluster has a leader."""
        session = self._session(False)
        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=self.connect_timeout)
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            try:
                async with session.get(self.endpoints[index] + "/health",
                                       timeout=limit) as response:
                    doc = json.loads(await response.read())
                if response.status == 200 and doc.get("health") == "true":
                    self._current = index
                    return True
            except (*_DOWN, ValueError, AttributeError):
                continue
        return False

    async def close(self) -> None:
        for session in (self._calls, self._waits):
            if session is not None:
                await session.close()
        self._calls = self._waits = None
