#!/usr/bin/env python3
"""Run a command on every completed upload, reading uploader's event stream.

    python examples/events_consumer.py --redis redis://127.0.0.1:6379/0 \\
        --url http://127.0.0.1:8888 --out sidecars/ -- sha256sum {file}

For each ``upload.completed`` event on the stream (consumer group
``--group``; any number of these processes share the work), the file is
downloaded from ``--url`` to a temporary file, the command runs with
``{file}`` replaced by its path (appended when absent), and its standard
output is written to ``<out>/<upload_id>.<suffix>`` (a sidecar, written to a
temporary name and renamed, so it is whole or absent).

At least once in, exactly once out: the server may publish an event twice
and a consumer may die before XACK, so each event id is recorded in
``<out>/.done/`` after its sidecar is in place; an event already recorded is
only acknowledged. Entries a dead consumer left pending are taken over
(XAUTOCLAIM) after ``--claim-idle`` seconds. Needs only redis-py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger("events_consumer")


class Consumer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = redis.Redis.from_url(args.redis, socket_timeout=args.block / 1000 + 10)
        self.out = Path(args.out)
        self.done = self.out / ".done"
        self.done.mkdir(parents=True, exist_ok=True)
        self.stopping = False

    def ensure_group(self) -> None:
        try:
            # From the stream's start: events published before the first
            # consumer ran are processed too.
            self.client.xgroup_create(self.args.stream, self.args.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        self.ensure_group()
        # First what this consumer name was given before a restart and never
        # acknowledged, then what dead consumers left, then new entries.
        self.handle(self.client.xreadgroup(self.args.group, self.args.consumer,
                                           {self.args.stream: "0"}))
        while not self.stopping:
            _, claimed, _ = self.client.xautoclaim(
                self.args.stream, self.args.group, self.args.consumer,
                min_idle_time=int(self.args.claim_idle * 1000), start_id="0-0", count=10)
            if claimed:
                self.handle([(self.args.stream, claimed)])
            self.handle(self.client.xreadgroup(self.args.group, self.args.consumer,
                                               {self.args.stream: ">"}, count=10,
                                               block=self.args.block))

    def handle(self, response: Any) -> None:
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                if not fields:  # trimmed away (MAXLEN) while pending
                    self.client.xack(self.args.stream, self.args.group, entry_id)
                    continue
                try:
                    self.process(json.loads(fields[b"event"]))
                except Exception:
                    # Left pending: retried after --claim-idle (XAUTOCLAIM
                    # takes our own idle entries too) or at the next start.
                    log.exception("could not process entry %s", entry_id)
                    continue
                self.client.xack(self.args.stream, self.args.group, entry_id)

    def process(self, event: dict[str, Any]) -> None:
        marker = self.done / event["id"]
        if event["type"] != "upload.completed" or marker.exists():
            return  # not ours, or already done (a duplicate delivery)
        upload = event["data"]["upload"]
        sidecar = self.out / f"{upload['upload_id']}.{self.args.suffix}"
        with tempfile.TemporaryDirectory(prefix="consumer-") as tmp:
            path = Path(tmp) / upload["filename"]
            self.download(upload["location"], path)
            command = [part.replace("{file}", str(path)) for part in self.args.command]
            if not any("{file}" in part for part in self.args.command):
                command.append(str(path))
            result = subprocess.run(command, stdout=subprocess.PIPE, check=True)
        partial = sidecar.with_name(sidecar.name + ".tmp")
        partial.write_bytes(result.stdout)
        os.replace(partial, sidecar)
        marker.touch()
        log.info("processed %s (%s) -> %s", upload["upload_id"], event["id"], sidecar)

    def download(self, location: str, path: Path) -> None:
        request = urllib.request.Request(self.args.url.rstrip("/") + location)
        if self.args.token:
            request.add_header("Authorization", f"Bearer {self.args.token}")
        with urllib.request.urlopen(request, timeout=60) as response, open(path, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="uploader:events")
    parser.add_argument("--group", default="postprocess")
    parser.add_argument("--consumer", default=f"{os.uname().nodename}-{os.getpid()}",
                        help="a stable name per process resumes its own pending entries")
    parser.add_argument("--url", default="http://127.0.0.1:8888", help="the uploader server")
    parser.add_argument("--token", default=os.environ.get("UPLOADER_TOKEN", ""),
                        help="bearer token for downloads (env UPLOADER_TOKEN)")
    parser.add_argument("--out", required=True, help="folder of the sidecar files")
    parser.add_argument("--suffix", default="out", help="sidecar name: <upload_id>.<suffix>")
    parser.add_argument("--claim-idle", type=float, default=60.0,
                        help="seconds before another consumer's pending entry is taken over")
    parser.add_argument("--block", type=int, default=2000, help="XREADGROUP BLOCK, ms")
    parser.add_argument("command", nargs="+", help="the command; {file} is the file's path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    consumer = Consumer(args)

    def stop(*_: Any) -> None:
        consumer.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
