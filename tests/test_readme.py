"""The README's curl walk-through, run as written: extracted from README.md
as a shell script and run in an empty folder against a live server, on local
disk and on S3 (where the download is a redirect to the bucket)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from support import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
pytestmark = pytest.mark.e2e


def curl_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A resumable upload with curl", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_the_readme_curl_walkthrough_runs_as_written(backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    settings: dict[str, object] = {}
    if backend == "s3":
        moto = request.getfixturevalue("s3_server")
        settings = {f"s3.{k}": v for k, v in moto.config(moto.new_bucket()).items()}
        settings.update({"storage.backend": "s3", "s3.download": "redirect"})
    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(20 * MiB + 12345)  # three 8 MiB chunks, the last one short
    (work / "big.iso").write_bytes(data)
    (work / "big.iso.copy").write_bytes(b"an older copy: replaced, no surprise")
    with ServerProcess(tmp_path / "srv", settings) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
        env["URL"] = server.url
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", curl_block()], cwd=work, env=env,
                             capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("identical: big.iso.copy")
    assert '"status":"completed"' in run.stdout.replace(" ", "")
    assert hashlib.md5((work / "big.iso.copy").read_bytes()).digest() == hashlib.md5(data).digest()
    assert sorted(p.name for p in work.iterdir()) == ["big.iso", "big.iso.copy"]
