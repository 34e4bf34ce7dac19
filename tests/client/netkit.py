"""Network pieces between the client and the real server, for the transport
tests: a forwarding HTTP proxy (absolute-form requests and CONNECT, as
squid or tinyproxy do) that records what passes through it, and a TLS front
(a certificate from a CA made for the test) that relays to the server.
Both really carry the bytes; neither answers anything by itself."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Seen:
    method: str
    target: str  # absolute URL, or host:port for CONNECT
    headers: dict[str, str] = field(default_factory=dict)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class _Server:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = [self._sock]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for s in self._open:
            try:
                s.close()
            except OSError:
                pass


class ForwardProxy(_Server):
    """One request per client connection (it answers ``Connection: close``)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def _handle(self, conn: socket.socket) -> None:
        got = _read_head(conn)
        if got is None:
            conn.close()
            return
        head, rest = got
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        self.seen.append(Seen(method, target, headers))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self._open.append(upstream)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            threading.Thread(target=_pipe, args=(upstream, conn), daemon=True).start()
            _pipe(conn, upstream)
            return
        url = urllib.parse.urlsplit(target)
        upstream = socket.create_connection((url.hostname, url.port or 80))
        self._open.append(upstream)
        kept = [f"{k}: {v}" for k, v in headers.items()
                if k.lower() not in ("connection", "proxy-authorization", "proxy-connection")]
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        upstream.sendall("\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close",
                                      "", ""]).encode("latin-1") + rest)
        length = int(headers.get("Content-Length", 0)) - len(rest)
        while length > 0:
            data = conn.recv(min(length, 65536))
            if not data:
                break
            upstream.sendall(data)
            length -= len(data)
        _pipe(upstream, conn)  # the answer, until the server closes


class TLSFront(_Server):
    """https://localhost:PORT in front of the plain-HTTP server on ``upstream_port``."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(cert, key)
        super().__init__()
        self.url = f"https://localhost:{self.port}"

    def _handle(self, conn: socket.socket) -> None:
        try:
            tls = self._ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # a client that does not trust us hangs up
            conn.close()
            return
        self._open.append(tls)
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._open.append(upstream)
        threading.Thread(target=_pipe, args=(upstream, tls), daemon=True).start()
        _pipe(tls, upstream)


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA (ca.pem) and a certificate for localhost signed by it (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uploader test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
