"""Command-line client: ``upload``, ``status``, ``download``, ``list``,
``delete`` and ``link`` subcommands.

``add_client_commands(subparsers)`` plugs them into the server's ``uploader``
command; ``main()`` runs them alone. Like :mod:`uploader.client`, this needs
only the standard library (``tqdm`` draws a nicer bar when it is installed).

Output: what a person reads by default (formats in the README), one JSON
value per line with ``--json`` for scripts; progress and errors go to stderr.
Exit codes: 0 done, 1 failed, 2 usage error, 130 interrupted (Ctrl-C; run
the same command again to resume).

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

from uploader import DISTRIBUTION, __version__, units
from uploader.client import DEFAULT_CHUNK_SIZE, LIST_PAGE, UploadClient, UploadClientError
from uploader.progress import make_bar

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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


# ---- commands ----------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> UploadClient:
    try:
        return UploadClient(args.url, token=args.token, parallel=getattr(args, "parallel", 4),
                            chunk_size=getattr(args, "chunk_size", DEFAULT_CHUNK_SIZE),
                            cacert=args.cacert)
    except OSError as exc:  # the CA file
        print(f"uploader: --cacert {args.cacert}: {exc.strerror or exc}", file=sys.stderr)
    except ValueError as exc:  # the URL, or a proxy variable
        print(f"uploader: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _fail(what: str, exc: BaseException) -> None:
    print(f"uploader: {what}: {exc}", file=sys.stderr)


def _emit(args: argparse.Namespace, value: dict[str, Any], line: str) -> None:
    """One result: a JSON line with --json, else the line for people."""
    print(json.dumps(value, separators=(",", ":")) if args.json else line, flush=True)


def _interrupted(what: str) -> int:
    print(f"\nuploader: interrupted; {what}", file=sys.stderr)
    return EXIT_INTERRUPTED


def cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _upload_all(client, args)


def _upload_all(client: UploadClient, args: argparse.Namespace) -> int:
    code = EXIT_OK
    for path in args.files:
        try:
            state = FileResumeState(state_path(), fingerprint(path, args.url))
            bar = make_bar(os.path.getsize(path), os.path.basename(path), args.quiet)
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
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            upload_id = state.load()
            return _interrupted(f"run the same command again to resume {path}"
                                + (f" (upload {upload_id})" if upload_id else ""))
        except (UploadClientError, OSError) as exc:
            if bar is not None:
                bar.close()
            _fail(path, exc)
            code = EXIT_FAILED
            continue
        if bar is not None:
            bar.close()
        url = f"{args.url.rstrip('/')}{upload.get('location', '')}"
        # A direct upload verified by its parts has no server-computed MD5:
        # the line shows the MD5 this client computed and claimed instead.
        md5 = upload["md5"] or upload.get("md5_claimed")
        doc = {"path": path, "upload_id": upload["upload_id"], "size": upload["size"],
               "md5": md5, "url": url}
        if upload.get("verified"):
            doc["verified"] = upload["verified"]
        _emit(args, doc, f"{path}\t{upload['upload_id']}\t{md5}\t{url}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            upload = client.status(args.upload_id)
    except UploadClientError as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    print(json.dumps(upload, separators=(",", ":")) if args.json else json.dumps(upload, indent=2))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    if not args.json:
        print(LIST_HEADER)
    try:
        with _client(args) as client:
            # Page by page as they come: a long list starts printing at once
            # and never sits whole in memory.
            for upload in client.iter_uploads(status=args.status, filename=args.filename,
                                              limit=args.limit, page_size=args.page_size):
                _emit(args, upload, _list_line(upload))
    except UploadClientError as exc:
        _fail("list", exc)
        return EXIT_FAILED
    return EXIT_OK


LIST_HEADER = f"{'ID':32}  {'STATUS':11}  {'CHUNKS':>11}  {'SIZE':>9}  {'UPDATED':20}  FILENAME"


def _list_line(upload: dict[str, Any]) -> str:
    chunks = f"{len(upload.get('received', []))}/{upload['total_chunks']}"
    updated = str(upload.get("updated_at", ""))[:19].replace("T", " ")
    return (f"{upload['upload_id']:32}  {upload['status']:11}  {chunks:>11}  "
            f"{units.format_size(upload['size']):>9}  {updated:20}  {upload['filename']}")


def cmd_delete(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with _client(args) as client:
        for upload_id in args.upload_ids:
            try:
                client.delete(upload_id)
            except UploadClientError as exc:
                _fail(upload_id, exc)
                code = EXIT_FAILED
                continue
            _emit(args, {"upload_id": upload_id, "deleted": True}, f"deleted {upload_id}")
    return code


def cmd_download(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            meta = client.status(args.upload_id)
            dest: str = args.output or meta["filename"]
            if os.path.isdir(dest):  # like cp: into the folder, under the upload's name
                dest = os.path.join(dest, os.path.basename(meta["filename"]))
            if os.path.lexists(dest) and not args.force:
                print(f"uploader: {dest} exists; use --force to overwrite it", file=sys.stderr)
                return EXIT_FAILED
            _download(client, args, meta, dest)
    except KeyboardInterrupt:
        return _interrupted("run the same command again to continue the download")
    except (UploadClientError, OSError) as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    _emit(args, {"upload_id": args.upload_id, "path": dest, "size": meta["size"],
                 "md5": meta.get("md5")}, dest)
    return EXIT_OK


def cmd_link(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            url = client.link(args.upload_id, args.expires_in)
    except UploadClientError as exc:
        _fail(args.upload_id, exc)
        return EXIT_FAILED
    _emit(args, {"upload_id": args.upload_id, "url": url}, url)
    return EXIT_OK


def _download(client: UploadClient, args: argparse.Namespace, meta: dict[str, Any],
              dest: str) -> None:
    bar = make_bar(meta["size"], os.path.basename(dest), args.quiet)
    try:
        client.download(args.upload_id, dest,
                        progress=(lambda n, _t: bar.update_to(n)) if bar else None)
    finally:
        if bar is not None:
            bar.close()


def _page_size(text: str) -> int:
    value = _positive(text)
    if value > LIST_PAGE:
        raise argparse.ArgumentTypeError(f"must be <= {LIST_PAGE}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_client_commands(subparsers: Any) -> None:
    """Register the client commands on an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("UPLOADER_URL"),
                        required=not os.environ.get("UPLOADER_URL"),
                        help="server base URL, e.g. http://127.0.0.1:8888 (env UPLOADER_URL)")
    common.add_argument("--token", default=os.environ.get("UPLOADER_TOKEN"),
                        help="bearer token (env UPLOADER_TOKEN)")
    common.add_argument("--cacert", metavar="FILE",
                        help="CA certificates (PEM) to trust for https (default: "
                             "SSL_CERT_FILE, else the system's); HTTP(S)_PROXY and NO_PROXY "
                             "are honoured")
    common.add_argument("--json", action="store_true",
                        help="one JSON value per line on stdout, for scripts")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="say what happens (created / resumed upload, chunks sent)")

    up = subparsers.add_parser("upload", parents=[common], help="upload files (resumable)")
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument("--parallel", type=_positive, default=4, help="chunks in flight (4)")
    up.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE,
                    help=f"bytes per chunk, e.g. 8MiB or 8M ({units.SIZE_HELP}); doubled as "
                         f"needed to stay within 10,000 chunks")
    up.set_defaults(func=cmd_upload)

    st = subparsers.add_parser("status", parents=[common], help="show an upload as JSON")
    st.add_argument("upload_id", metavar="ID")
    st.set_defaults(func=cmd_status)

    dl = subparsers.add_parser("download", parents=[common], help="download a completed upload")
    dl.add_argument("upload_id", metavar="ID")
    dl.add_argument("-o", "--output", help="destination path, or a folder to put it in "
                    "(default: its filename here)")
    dl.add_argument("-f", "--force", action="store_true",
                    help="overwrite the destination if it exists")
    dl.set_defaults(func=cmd_download)

    ls = subparsers.add_parser("list", parents=[common], help="list your uploads")
    ls.add_argument("--status", choices=("in_progress", "merging", "completed", "failed",
                                         "aborted"), help="only uploads in this state")
    ls.add_argument("--filename", help="only uploads of this (sanitized) filename")
    ls.add_argument("--limit", type=_positive, metavar="N",
                    help="only the newest N (default: all, fetched a page at a time)")
    ls.add_argument("--page-size", type=_page_size, default=LIST_PAGE, metavar="N",
                    help=f"uploads per request, 1-{LIST_PAGE} (default {LIST_PAGE})")
    ls.set_defaults(func=cmd_list)

    rm = subparsers.add_parser("delete", parents=[common],
                               help="delete uploads: cancel unfinished ones, remove finished files")
    rm.add_argument("upload_ids", nargs="+", metavar="ID")
    rm.set_defaults(func=cmd_delete)

    ln = subparsers.add_parser("link", parents=[common],
                               help="print a download URL that needs no token (it expires)")
    ln.add_argument("upload_id", metavar="ID")
    ln.add_argument("--expires-in", type=_positive, metavar="SECONDS",
                    help="how long it stays valid (default and maximum: the server's links.expiry)")
    ln.set_defaults(func=cmd_link)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uploader-client",
                                     description="Resumable uploads to an uploader server.")
    parser.add_argument("--version", action="version",
                        version=f"uploader {__version__} ({DISTRIBUTION})")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return _interrupted("run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
