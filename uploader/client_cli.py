"""Command-line client: ``upload``, ``status``, ``download`` and ``link`` subcommands.

``add_client_commands(subparsers)`` plugs them into the server's ``uploader``
command; ``main()`` runs them alone. Like :mod:`uploader.client`, this needs
only the standard library (``tqdm`` draws a nicer bar when it is installed).

An interrupted ``upload`` resumes: the upload id is kept in a small JSON file
in the user's config folder, keyed by the file's fingerprint (absolute path,
size, mtime and server URL), so running the same command again sends only the
chunks the server is missing. A changed file has another fingerprint and
starts a new upload.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from uploader import units
from uploader.client import DEFAULT_CHUNK_SIZE, UploadClient, UploadClientError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_size(text: str) -> int:
    """``8388608``, ``8MiB``, ``8M`` -> bytes (argparse type): the grammar of
    config.yaml (:mod:`uploader.units`)."""
    try:
        return units.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- resume state --------------------------------------------------------------------

def state_path() -> Path:
    if os.environ.get("UPLOADER_CLIENT_STATE"):
        return Path(os.environ["UPLOADER_CLIENT_STATE"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "uploader" / "state.json"


def fingerprint(path: str, url: str) -> str:
    """Same file (path, size, mtime) to the same server -> same key. Content is
    not hashed here: that would read the whole file just to find the key."""
    st = os.stat(path)
    return json.dumps([url.rstrip("/"), os.path.abspath(path), st.st_size, st.st_mtime_ns])


class FileResumeState:
    """One entry of the state file, as :class:`uploader.client.ResumeState`.

    Several CLI runs may share the file, so each read-modify-write holds an
    advisory lock, and each write goes to a temp file renamed over the old
    one: a run killed mid-write leaves the previous state, never half a file."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(f"{self.path}.lock", "a") as lock:
            try:
                import fcntl
                fcntl.flock(lock, fcntl.LOCK_EX)
            except ImportError:  # Windows: no flock; concurrent runs there may race
                pass
            try:
                entries = json.loads(self.path.read_text())["uploads"]
            except (OSError, ValueError, KeyError, TypeError):
                entries = {}  # missing or unreadable: resume is a nicety, not a must
            yield entries

    def _write(self, entries: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "uploads": entries}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load(self) -> str | None:
        with self._locked() as entries:
            entry = entries.get(self.key)
            return entry.get("upload_id") if isinstance(entry, dict) else None

    def save(self, upload_id: str) -> None:
        with self._locked() as entries:
            entries[self.key] = {"upload_id": upload_id, "saved_at": int(time.time())}
            self._write(entries)

    def clear(self) -> None:
        with self._locked() as entries:
            if entries.pop(self.key, None) is not None:
                self._write(entries)


# ---- progress --------------------------------------------------------------------------

class _TextBar:
    """The fallback when tqdm is missing: one line, redrawn at most twice a second."""

    def __init__(self, total: int, desc: str, stream: Any) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n, self._start, self._drawn = 0, time.monotonic(), 0.0
        self._first: int | None = None

    def update_to(self, n: int) -> None:
        if self._first is None:
            self._first = n  # bytes already on the server do not count for speed
        self.n = n
        now = time.monotonic()
        if now - self._drawn >= 0.5 or n >= self.total:
            self._drawn = now
            rate = (n - self._first) / max(now - self._start, 1e-6) / (1 << 20)
            pct = 100 * n / self.total if self.total else 100
            self.stream.write(f"\r{self.desc}: {pct:5.1f}% {n / (1 << 20):,.1f}"
                              f"/{self.total / (1 << 20):,.1f} MiB {rate:,.1f} MiB/s")
            self.stream.flush()

    def write(self, msg: str) -> None:
        self.stream.write(f"\r{msg}\n" if self.n else f"{msg}\n")

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class _TqdmBar:
    def __init__(self, total: int, desc: str, stream: Any) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         file=stream, dynamic_ncols=True, miniters=1)
        self._first = True

    def update_to(self, n: int) -> None:
        first, self._first = self._first, False
        if first and n:
            # A resumed upload starts with the server's bytes: count them as
            # the bar's "initial" so the speed shown is this run's, not inflated.
            self._bar.initial = self._bar.n = self._bar.last_print_n = n
            self._bar.refresh()
            return
        self._bar.update(n - self._bar.n)

    def write(self, msg: str) -> None:
        self._bar.write(msg, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


def _make_bar(total: int, desc: str, quiet: bool) -> Any:
    if quiet:
        return None
    try:
        return _TqdmBar(total, desc, sys.stderr)
    except ImportError:
        return _TextBar(total, desc, sys.stderr)


# ---- commands ----------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> UploadClient:
    return UploadClient(args.url, token=args.token, parallel=getattr(args, "parallel", 4),
                        chunk_size=getattr(args, "chunk_size", DEFAULT_CHUNK_SIZE))


def _fail(what: str, exc: BaseException) -> None:
    print(f"uploader: {what}: {exc}", file=sys.stderr)


def cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _upload_all(client, args)


def _upload_all(client: UploadClient, args: argparse.Namespace) -> int:
    code = EXIT_OK
    for path in args.files:
        try:
            state = FileResumeState(state_path(), fingerprint(path, args.url))
            bar = _make_bar(os.path.getsize(path), os.path.basename(path), args.quiet)
        except OSError as exc:
            _fail(path, exc)
            code = EXIT_FAILED
            continue
        lock = threading.Lock()

        def progress(sent: int, total: int, bar: Any = bar) -> None:
            if bar is not None:
                with lock:
                    bar.update_to(sent)

        def log(msg: str, bar: Any = bar) -> None:
            if args.verbose:
                with lock:
                    bar.write(msg) if bar is not None else print(msg, file=sys.stderr)
        try:
            upload = client.upload(path, progress=progress, resume_state=state, log=log)
        except (UploadClientError, OSError) as exc:
            if bar is not None:
                bar.close()
            _fail(path, exc)
            code = EXIT_FAILED
            continue
        if bar is not None:
            bar.close()
        print(f"{path}\t{upload['upload_id']}\t{upload['md5']}\t{args.url.rstrip('/')}"
              f"{upload.get('location', '')}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            print(json.dumps(client.status(args.upload_id), indent=2))
    except UploadClientError as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            dest = _download(client, args)
    except (UploadClientError, OSError) as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    print(dest)
    return EXIT_OK


def cmd_link(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            print(client.link(args.upload_id, args.expires_in))
    except UploadClientError as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    return EXIT_OK


def _download(client: UploadClient, args: argparse.Namespace) -> str:
    meta = client.status(args.upload_id)
    dest: str = args.output or meta["filename"]
    bar = _make_bar(meta["size"], os.path.basename(dest), args.quiet)
    try:
        client.download(args.upload_id, dest,
                        progress=(lambda n, _t: bar.update_to(n)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    return dest


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_client_commands(subparsers: Any) -> None:
    """Register ``upload``, ``status``, ``download`` and ``link`` on an argparse
    subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("UPLOADER_URL"),
                        required=not os.environ.get("UPLOADER_URL"),
                        help="server base URL, e.g. http://127.0.0.1:8888 (env UPLOADER_URL)")
    common.add_argument("--token", default=os.environ.get("UPLOADER_TOKEN"),
                        help="bearer token (env UPLOADER_TOKEN)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="say what happens (created / resumed upload, chunks sent)")

    up = subparsers.add_parser("upload", parents=[common], help="upload files (resumable)")
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument("--parallel", type=_positive, default=4, help="chunks in flight (4)")
    up.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE,
                    help="bytes per chunk, e.g. 8MiB (doubled as needed for 10,000 chunks)")
    up.set_defaults(func=cmd_upload)

    st = subparsers.add_parser("status", parents=[common], help="show an upload as JSON")
    st.add_argument("upload_id", metavar="ID")
    st.set_defaults(func=cmd_status)

    dl = subparsers.add_parser("download", parents=[common], help="download a completed upload")
    dl.add_argument("upload_id", metavar="ID")
    dl.add_argument("-o", "--output", help="destination path (default: its filename here)")
    dl.set_defaults(func=cmd_download)

    ln = subparsers.add_parser("link", parents=[common],
                               help="print a download URL that needs no token (it expires)")
    ln.add_argument("upload_id", metavar="ID")
    ln.add_argument("--expires-in", type=_positive, metavar="SECONDS",
                    help="how long it stays valid (default and maximum: the server's links.expiry)")
    ln.set_defaults(func=cmd_link)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uploader-client",
                                     description="Resumable uploads to an uploader server.")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("uploader: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
