"""A small HTTP/1.1-aware TCP proxy placed between the client under test and
the real server (or the real S3 server, moto, in direct mode).

The proxy is a fake on purpose and only for what a real server cannot be made to do
on demand: drop a connection mid-request (retry tests), hold one chunk PUT
forever so a CLI run can be killed at an exact point (resume test), and refuse
an expired presigned URL as S3 does (moto does not check expiry). It also
logs every request it forwards, which is how the tests count the chunks a run
really sent. Everything else is relayed byte for byte to the real server.

A "chunk PUT" is a PUT to the server's ``/chunk?index=N`` or a presigned S3
part PUT (``?partNumber=N+1&...&X-Amz-Signature=...``).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

EXPIRED = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
           b"<Message>Request has expired</Message></Error>")


@dataclass
class Logged:
    method: str
    path: str
    outcome: str  # the HTTP status relayed, or "dropped" / "stalled"
    body: int = 0  # request body bytes relayed to the server

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                .items()}

    @property
    def chunk_index(self) -> int | None:
        if self.method != "PUT":
            return None
        if urllib.parse.urlsplit(self.path).path.endswith("/chunk"):
            return int(self.query["index"])
        if "partNumber" in self.query and "X-Amz-Signature" in self.query:
            return int(self.query["partNumber"]) - 1
        return None

    @property
    def signed_at(self) -> float | None:
        """When a presigned URL was signed (its X-Amz-Date), Unix time."""
        stamp = self.query.get("X-Amz-Date")
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=timezone.utc).timestamp() if stamp else None

    def expired(self, now: float) -> bool:
        """S3's rule: a presigned request after X-Amz-Date + X-Amz-Expires is refused."""
        signed = self.signed_at
        return signed is not None and now > signed + int(self.query.get("X-Amz-Expires", "0"))


class ChunkProxy:
    def __init__(self, upstream_port: int, *, drop_puts: int = 0,
                 admit_puts: int | None = None, enforce_expiry: bool = False) -> None:
        """``drop_puts``: close the first N chunk PUT connections without an answer.
        ``admit_puts``: forward only the first N chunk PUTs; hold every later one
        (no answer, connection kept open) until :meth:`close`.
        ``enforce_expiry``: answer an expired presigned request 403 as S3 does."""
        self.upstream_port = upstream_port
        self.drop_puts, self.admit_puts = drop_puts, admit_puts
        self.enforce_expiry = enforce_expiry
        self.log: list[Logged] = []
        self.cond = threading.Condition()
        self._release = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    # -- test side ----------------------------------------------------------------
    def puts(self, outcome: str | None = "200") -> list[Logged]:
        with self.cond:
            return [e for e in self.log if e.chunk_index is not None
                    and (outcome is None or e.outcome == outcome)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Block until ``predicate`` holds (checked on every log entry): event
        driven, with a timeout only so a broken test fails instead of hanging."""
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"proxy: condition not reached; log={self.log}")

    def close(self) -> None:
        self._release.set()
        with self.cond:
            conns = [self._sock, *self._conns]
        for c in conns:  # shutdown, not just close: it wakes the threads blocked on them
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in [self._accepter, *self._threads]:
            t.join(timeout=10)

    # -- proxy side ---------------------------------------------------------------
    def _record(self, method: str, path: str, outcome: str, body: int = 0) -> None:
        with self.cond:
            self.log.append(Logged(method, path, outcome, body))
            self.cond.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return  # closed
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self.cond:
                self._conns.append(client)
                self._threads.append(t)
            t.start()

    def _decide(self, method: str, path: str) -> str:
        request = Logged(method, path, "")
        if self.enforce_expiry and request.expired(time.time()):
            return "expired"
        if request.chunk_index is None:
            return "forward"
        with self.cond:
            if self.drop_puts > 0:
                self.drop_puts -= 1
                return "drop"
            if self.admit_puts is not None:
                if self.admit_puts == 0:
                    return "stall"
                self.admit_puts -= 1
        return "forward"

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with self.cond:
            self._conns.append(upstream)
        cin, uin = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                head = _read_head(cin)
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                m, p = method.decode(), path.decode()
                action = self._decide(m, p)
                if action == "drop":
                    self._record(m, p, "dropped")
                    return  # closes with the body unread: the client sees a reset
                if action == "stall":
                    self._record(m, p, "stalled")
                    self._release.wait()
                    return
                if action == "expired":
                    _relay_body(head, cin, _Sink())
                    self._record(m, p, "403")
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(EXPIRED) + EXPIRED)
                    continue
                upstream.sendall(head)
                resp, body = self._relay_request_body(head, cin, uin, client, upstream)
                if resp is None:
                    return
                # Logged before the client can see the answer, so a test that
                # has its answer always finds it in the log.
                self._record(m, p, resp.split(b" ", 2)[1].decode(), body)
                client.sendall(resp)
                if m != "HEAD":
                    _relay_body(resp, uin, client, response=True)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                s.close()


    @staticmethod
    def _relay_request_body(head: bytes, cin: object, uin: object, client: socket.socket,
                            upstream: socket.socket) -> tuple[bytes | None, int]:
        """Relay the request body; the head of the final answer and the body
        bytes relayed. With ``Expect: 100-continue`` the server answers first:
        its 100 is relayed and the body follows, or its final answer comes
        and no body does."""
        if (_header(head, b"expect") or b"").lower() == b"100-continue":
            resp = _read_head(uin)
            if resp is None or resp.split(b" ", 2)[1] != b"100":
                return resp, 0
            client.sendall(resp)
        body = _relay_body(head, cin, upstream)
        return _read_head(uin), body


def _read_head(f: "socket.SocketIO | object") -> bytes | None:
    lines = []
    while True:
        line = f.readline(65536)  # type: ignore[attr-defined]
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _relay_body(head: bytes, src: object, dst: socket.socket, response: bool = False) -> int:
    """Copy one message body: Content-Length, chunked, or (status 1xx/204/304)
    none. Returns the bytes of content copied."""
    status = head.split(b" ", 2)[1]
    if response and (status in (b"204", b"304") or status.startswith(b"1")):
        return 0
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        copied = 0
        while True:
            size_line = src.readline()  # type: ignore[attr-defined]
            dst.sendall(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (trailer := src.readline()) not in (b"\r\n", b"\n", b""):  # type: ignore[attr-defined]
                    dst.sendall(trailer)
                dst.sendall(b"\r\n")
                return copied
            _copy(src, dst, size + 2)
            copied += size
    length = int(_header(head, b"content-length") or 0)
    _copy(src, dst, length)
    return length


def _copy(src: object, dst: socket.socket, n: int) -> None:
    while n > 0:
        data = src.read(min(n, 1 << 20))  # type: ignore[attr-defined]
        if not data:
            raise OSError("peer closed mid-body")
        dst.sendall(data)
        n -= len(data)


class _Sink:
    """A socket stand-in that drops what is sent (a refused request's body)."""

    def sendall(self, data: bytes) -> None:
        pass
