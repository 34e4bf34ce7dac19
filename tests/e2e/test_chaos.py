"""Chaos: 3 instances, 30 uploads of random sizes through clients that retry,
while a driver kills and restarts instances, cuts the database and the lock
service and drops client connections mid-chunk. The seed also picks the
shared lock backend (Redis, MySQL named locks, etcd; with MySQL the lock
service is the database, cut with it). At the end every upload is completed with
the right MD5 (or was explicitly refused), and every file under data_dir is
accounted for. Seeded (TEST_UPLOADER_CHAOS_SEEDS="1,2,3" to choose) and bounded
in time; it prints what it injected and what it verified.

The database and the lock service are reached through TcpProxy relays that the driver
cuts and restores: the machine's services are shared and must stay up (a
fault made on the network path; every byte is the real service's).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pytest

from support import ServerProcess
from uploader.store.dsn import parse_dsn

from .helpers import ETCD_URL, LOCK_BACKENDS, REDIS_URL, Cluster, dsn_via
from .proxy import TcpProxy

pytestmark = pytest.mark.e2e
SEEDS = [int(s) for s in os.environ.get("TEST_UPLOADER_CHAOS_SEEDS", "7").split(",")]
UPLOADS, DEADLINE = 30, 150.0
RETRYABLE = {409, 429, 500, 502, 503, 504, 507}


@dataclass
class Job:
    number: int
    data: bytes
    chunk_size: int
    upload_id: str | None = None
    outcome: str = "pending"  # completed | refused:<code> | gave up
    attempts: int = 0
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        self.md5 = hashlib.md5(self.data).hexdigest()


class ChaosClient:
    """A client that retries on any failure against any live instance, and
    now and then hangs up in the middle of a chunk body."""

    def __init__(self, instances: list[ServerProcess], rng: random.Random, deadline: float) -> None:
        self.instances, self.rng, self.deadline = instances, rng, deadline
        self.dropped = 0

    def _call(self, method: str, path: str, body: bytes = b"", *,
              drop: bool = False) -> tuple[int, dict]:
        instance = self.rng.choice(self.instances)
        conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=10)
        try:
            if drop:  # half a body, then hang up: the server must keep nothing of it
                conn.putrequest(method, path)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders()
                conn.send(body[:len(body) // 2])
                self.dropped += 1
                return 0, {}
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
        except (OSError, http.client.HTTPException, ValueError):
            return 0, {}
        finally:
            conn.close()

    def call(self, job: Job, method: str, path: str, body: bytes = b"",
             ok: tuple[int, ...] = (200,), chaos: bool = False) -> tuple[int, dict]:
        delay = 0.02
        while time.monotonic() < self.deadline:
            job.attempts += 1
            drop = chaos and len(body) > 1 and self.rng.random() < 0.05
            code, doc = self._call(method, path, body, drop=drop)
            if code in ok or (code and code not in RETRYABLE):
                return code, doc
            time.sleep(delay * (1 + self.rng.random()))  # backoff, not synchronisation
            delay = min(delay * 2, 0.5)
        return 0, {}

    def run(self, job: Job) -> None:
        code, doc = self.call(job, "POST", "/upload/init", json.dumps(
            {"filename": f"chaos-{job.number}.bin", "size": len(job.data),
             "chunk_size": job.chunk_size}).encode(), ok=(201,))
        if code != 201:
            job.outcome = f"refused:{doc.get('error', {}).get('code', code)}" if code else "gave up"
            return
        job.upload_id = uid = doc["upload_id"]
        order = list(range(doc["total_chunks"]))
        self.rng.shuffle(order)
        for i in order:
            piece = job.data[i * job.chunk_size:(i + 1) * job.chunk_size]
            md5 = hashlib.md5(piece).hexdigest()
            code, doc = self.call(job, "PUT", f"/upload/{uid}/chunk?index={i}&md5={md5}",
                                  piece, chaos=True)
            if code != 200:
                job.outcome = f"refused:{doc.get('error', {}).get('code', code)}" if code else "gave up"
                return
        while time.monotonic() < self.deadline:
            code, doc = self.call(job, "POST", f"/upload/{uid}/complete",
                                  json.dumps({"md5": job.md5}).encode(), ok=(200, 202, 409))
            if code == 200:
                job.outcome = "completed"
                return
            if code == 409 and doc.get("error", {}).get("code") == "incomplete":
                for i in doc["error"]["missing"]:  # a chunk lost its bytes: send it again
                    piece = job.data[i * job.chunk_size:(i + 1) * job.chunk_size]
                    self.call(job, "PUT", f"/upload/{uid}/chunk?index={i}", piece)
            elif code not in (202, 409):
                job.outcome = f"refused:{doc.get('error', {}).get('code', code)}" if code else "gave up"
                return
            time.sleep(0.05)  # 202/409: the merge is running; poll again
        job.outcome = "gave up"


def run_driver(instances: list[ServerProcess], proxies: dict[str, TcpProxy],
               rng: random.Random, done: threading.Event, injected: Counter) -> None:
    while not done.wait(rng.uniform(0.4, 1.2)):
        action = rng.choice(["kill", "kill", *proxies])
        if action == "kill":
            victim = rng.choice(instances)
            victim.kill()
            injected["instance killed and restarted"] += 1
            victim.start()
        else:
            proxy = proxies[action]
            proxy.cut()
            injected[f"{action} cut"] += 1
            done.wait(rng.uniform(0.2, 1.0))
            proxy.restore()


def lock_service_via(cluster: Cluster, proxies: dict[str, TcpProxy]) -> dict[str, object]:
    """The cluster's lock service through a relay of its own (none for MySQL
    named locks: they go through the database's relay)."""
    if cluster.lock_backend == "redis":
        host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
        port, _, number = rest.partition("/")
        proxies["redis"] = TcpProxy(host, int(port))
        return {"locks.redis_url": f"redis://127.0.0.1:{proxies['redis'].port}/{number}"}
    if cluster.lock_backend == "etcd":
        host, _, port = ETCD_URL.removeprefix("http://").partition(":")
        proxies["etcd"] = TcpProxy(host, int(port))
        return {"locks.etcd_endpoints": f"http://127.0.0.1:{proxies['etcd'].port}"}
    return {}


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos(make_cluster: Callable[[str], Cluster], seed: int) -> None:
    rng = random.Random(seed)
    cluster = make_cluster(rng.choice(LOCK_BACKENDS))
    db = parse_dsn(cluster.dsn)
    proxies = {"database": TcpProxy(db["host"], db["port"])}
    overrides = {"store.mysql_dsn": dsn_via(cluster.dsn, proxies["database"].port),
                 **lock_service_via(cluster, proxies),
                 "locks.ttl": 3, "expiry.enabled": False}
    started = time.monotonic()
    try:
        instances = cluster.start(3, overrides)
        jobs = [Job(n, rng.randbytes(rng.choice([0, 1, 3, 40, 200, 700, 1500]) * 1024
                                     + rng.randrange(1024)),
                    rng.choice([4096, 16384, 65536])) for n in range(UPLOADS)]
        deadline = time.monotonic() + DEADLINE
        clients = [ChaosClient(instances, random.Random(rng.random()), deadline)
                   for _ in range(6)]
        done, injected = threading.Event(), Counter()
        driver = threading.Thread(target=run_driver, args=(instances, proxies, rng, done,
                                                           injected))
        driver.start()
        workers = [threading.Thread(target=lambda c=c, k=k: [c.run(j) for j in jobs[k::6]])
                   for k, c in enumerate(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(DEADLINE + 30)
        done.set()
        driver.join(60)
        for proxy in proxies.values():
            proxy.restore()
        for instance in instances:
            if not instance.running:
                instance.start()

        outcomes = Counter(job.outcome.split(":")[0] for job in jobs)
        assert outcomes["gave up"] == 0 and outcomes["pending"] == 0, \
            [(j.number, j.outcome) for j in jobs]
        # The crash leftovers (.part files of killed writers, merges recorded
        # but not yet renamed into place) are the sweep's job: run it by hand,
        # as an operator would, with nothing in flight.
        sweep = cluster.run("cleanup", settings={**overrides, "storage.stale_part_age": 0})
        assert sweep.returncode == 0, sweep.stderr
        verified = 0
        for job in jobs:
            if job.outcome != "completed":
                continue
            [(status, md5)] = cluster.sql(
                "SELECT status, md5 FROM uploads WHERE upload_id = %s", (job.upload_id,))
            assert (status, md5) == ("completed", job.md5), job.number
            assert hashlib.md5(cluster.stored_file(job.upload_id).read_bytes()
                               ).hexdigest() == job.md5
            verified += 1

        rows = dict(cluster.sql("SELECT upload_id, status FROM uploads"))
        keys = {k for (k,) in cluster.sql(
            "SELECT storage_key FROM uploads WHERE status = 'completed'")}
        stray = []
        for path in cluster.data_dir.rglob("*"):
            rel = path.relative_to(cluster.data_dir)
            if path.is_dir() and rel.parts[0] == "tmp" and len(rel.parts) == 2:
                if rows.get(rel.parts[1]) not in ("in_progress", "merging"):
                    stray.append(str(rel))
            elif path.is_file() and rel.parts[0] == "store" and str(rel) not in keys:
                stray.append(str(rel))
            elif path.is_file() and rel.parts[0] == "tmp" and rows.get(rel.parts[1]) is None:
                stray.append(str(rel))
            elif path.name.endswith(".part"):
                stray.append(str(rel))
        assert stray == [], stray
        print(f"\nchaos seed {seed} ({cluster.lock_backend} locks): "
              f"{time.monotonic() - started:.1f}s; injected "
              f"{dict(injected)}, {sum(c.dropped for c in clients)} client connections dropped "
              f"mid-chunk; uploads {dict(outcomes)}; {verified} files verified by MD5; "
              f"{sum(j.attempts for j in jobs)} requests; sweep: {sweep.stdout.strip().splitlines()[-1]}; "
              f"no unaccounted file under data_dir")
    finally:
        for proxy in proxies.values():
            proxy.close()
