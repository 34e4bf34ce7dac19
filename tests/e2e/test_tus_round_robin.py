"""Three instances on MariaDB + Redis + one data_dir behind a round-robin TCP
balancer; tus-js-client opens one connection per request, so creation, the
PATCHes and the HEADs of one upload are spread over all three."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import MiB, file_md5, write_random
from support.node import TUS_JS_CLIENT, NodeUpload, npm_packages
from support.s3 import MotoS3

from .balancer import RoundRobin
from .helpers import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.mysql, pytest.mark.redis]


@pytest.mark.parametrize("parallel", [1, 3])
def test_tus_js_client_round_robin_over_three_instances(
        cluster: Cluster, tmp_path: Path, parallel: int) -> None:
    tus_js_client = npm_packages("tus-js-client", TUS_JS_CLIENT)
    instances = cluster.start(3)
    balancer = RoundRobin([i.port for i in instances])
    try:
        data = tmp_path / "spread.bin"
        write_random(data, 5 * MiB + 321)
        # Every PATCH ends mid-chunk (chunks are 8 MiB): each instance must
        # continue from the tail another one saved.
        client = NodeUpload(tus_js_client, endpoint=f"http://127.0.0.1:{balancer.port}/files/",
                          file=str(data), chunkSize=700_000, parallelUploads=parallel,
                          keepAlive=False)
        outcome = client.finish()
        assert outcome["e"] == "success", client.events
        assert all(p["status"] == 204 for p in client.responses("PATCH"))
        uid = outcome["url"].rstrip("/").rsplit("/", 1)[1]
        for instance in instances:
            status = instance.status(uid)
            assert status["status"] == "completed" and status["md5"] == file_md5(data)
            assert instance.count_log(r"PATCH /files/") > 0  # each one took part
        assert instances[1].download_md5(f"/files/{uid}") == file_md5(data)
        assert cluster.part_files() == []
    finally:
        balancer.close()


def test_parallel_uploads_on_s3_over_three_instances_with_disks_of_their_own(
        cluster: Cluster, tmp_path: Path, s3_server: MotoS3, s3_bucket: str) -> None:
    """Concatenation on S3 across instances that share no disk: a partial's
    chunks are staged wherever its PATCHes landed, so the instance that builds
    the final reads back from S3 what it does not hold, and seals each partial
    under its Redis lock."""
    tus_js_client = npm_packages("tus-js-client", TUS_JS_CLIENT)
    s3 = {f"s3.{k}": v for k, v in s3_server.config(s3_bucket, prefix="u/").items()}
    instances = [cluster.start(1, {"storage.backend": "s3", "s3.download": "stream", **s3,
                                   "storage.data_dir": str(tmp_path / f"disk{n}")})[0]
                 for n in range(3)]
    balancer = RoundRobin([i.port for i in instances])
    try:
        data = tmp_path / "spread.bin"
        write_random(data, 16 * MiB + 321)  # three partials of ~5.3 MiB: copied inside S3
        client = NodeUpload(tus_js_client, endpoint=f"http://127.0.0.1:{balancer.port}/files/",
                            file=str(data), chunkSize=2 * MiB, parallelUploads=3,
                            keepAlive=False)
        outcome = client.finish()
        assert outcome["e"] == "success", client.events
        uid = outcome["url"].rstrip("/").rsplit("/", 1)[1]
        for instance in instances:
            status = instance.status(uid)
            assert status["status"] == "completed" and status["md5"] == file_md5(data)
        assert instances[2].download_md5(f"/files/{uid}") == file_md5(data)
        assert sum(i.count_log(r"concat of ") for i in instances) == 1
        assert s3_server.keys(s3_bucket) == [f"u/{uid}_spread.bin"]
        assert s3_server.open_uploads(s3_bucket) == []
    finally:
        balancer.close()
