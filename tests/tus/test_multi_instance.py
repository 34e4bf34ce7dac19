"""Three instances on MariaDB + Redis + one data_dir behind a round-robin TCP
balancer; tus-js-client opens one connection per request, so creation, the
PATCHes and the HEADs of one upload are spread over all three."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import Cluster, cluster, mysql_server, redis_client  # noqa: F401
from .balancer import RoundRobin
from .conftest import MiB, file_md5, make_file, run_node

pytestmark = [pytest.mark.e2e, pytest.mark.mysql, pytest.mark.redis]


@pytest.mark.parametrize("parallel", [1, 3])
def test_tus_js_client_round_robin_over_three_instances(
        cluster: Cluster, tus_js_client: Path, tmp_path: Path, parallel: int) -> None:  # noqa: F811
    instances = cluster.start(3)
    balancer = RoundRobin([i.port for i in instances])
    try:
        data = make_file(tmp_path / "spread.bin", 5 * MiB + 321)
        # Every PATCH ends mid-chunk (chunks are 8 MiB): each instance must
        # continue from the tail another one saved.
        client = run_node(tus_js_client, endpoint=f"http://127.0.0.1:{balancer.port}/files/",
                          file=str(data), chunkSize=700_000, parallelUploads=parallel,
                          keepAlive=False)
        outcome = client.finish()
        assert outcome["e"] == "success", client.events
        assert all(p["status"] == 204 for p in client.responses("PATCH"))
        uid = outcome["url"].rstrip("/").rsplit("/", 1)[1]
        for instance in instances:
            status = instance.status(uid)
            assert status["status"] == "completed" and status["md5"] == file_md5(data)
            assert instance.count(r"PATCH /files/") > 0  # each one took part
        assert instances[1].download_md5(uid) == file_md5(data)
        assert cluster.part_files() == []
    finally:
        balancer.close()
