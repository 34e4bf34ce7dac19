"""A configuration mistake stops `uploader` with one line that names the
setting and where it was set (file:line, env NAME, --flag), and exit code 2;
never a traceback, never a silently ignored setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uploader.config import ConfigError, load_config

TIMEOUT = 60


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
        python: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`uploader ARGS` in an empty folder with no UPLOADER_* but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    return subprocess.run((python or [sys.executable, "-m", "uploader"]) + list(args),
                          cwd=tmp_path, env={**clean, **(env or {})}, capture_output=True,
                          text=True, timeout=TIMEOUT)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("uploader: ")
    return lines[0].removeprefix("uploader: ")


def test_bad_value_in_the_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("server:\n  port: 8888\nlimits:\n  chunk_size_min: lots\n")
    line = one_line_error(run(tmp_path, "serve", "--config", "c.yaml"))
    assert line.startswith("c.yaml:4: limits.chunk_size_min must be a size"), line


def test_keys_that_disagree_blame_the_one_that_was_set(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("# limits\nlimits:\n\n  chunk_size_max: 1KiB\n")
    line = one_line_error(run(tmp_path, "migrate", "--config", "c.yaml"))
    assert line == "c.yaml:4: limits.chunk_size_max must be >= chunk_size_min"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("server:\n  port: 8888\n  host: [unclosed\nlimits: {}\n")
    line = one_line_error(run(tmp_path, "serve", "--config", "c.yaml"))
    assert line.startswith("c.yaml:4: not valid YAML"), line


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path, "serve", "--config", "nope.yaml"))
    assert line == "nope.yaml: cannot read the config file: No such file or directory"


def test_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path, "serve", env={"UPLOADER_SERVER_PORT": "0"}))
    assert line == "env UPLOADER_SERVER_PORT: server.port must be between 1 and 65535"


def test_bad_flag_names_the_flag(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path, "serve", "--port", "70000"))
    assert line == "--port: server.port must be between 1 and 65535"


def test_unknown_uploader_variable_is_an_error(tmp_path: Path) -> None:
    """A typo in the section used to be ignored silently."""
    line = one_line_error(run(tmp_path, "serve", env={"UPLOADER_SERVR_PORT": "9000"}))
    assert line == ("env UPLOADER_SERVR_PORT: unknown setting servr.port "
                    "(did you mean UPLOADER_SERVER_PORT?)")


def test_malformed_mysql_dsn_keeps_the_password_out(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path, "migrate", env={
        "UPLOADER_STORE_BACKEND": "mysql",
        "UPLOADER_STORE_MYSQL_DSN": "mysql://app:s3cret@db:port/uploads"}))
    assert line.startswith("env UPLOADER_STORE_MYSQL_DSN: store.mysql_dsn: MySQL DSN has a bad "
                           "port"), line
    assert "s3cret" not in line


def test_missing_s3_extra(tmp_path: Path) -> None:
    """The s3 extra cannot be uninstalled from the test venv for one test, so
    this is a fake: the interpreter is told that aiobotocore does not exist
    (sys.modules[name] = None makes its import fail as if it were absent)."""
    python = [sys.executable, "-c", "import sys; sys.modules['aiobotocore'] = None; "
              "from uploader.cli import main; sys.exit(main())"]
    line = one_line_error(run(tmp_path, "serve", python=python, env={
        "UPLOADER_STORAGE_BACKEND": "s3", "UPLOADER_S3_BUCKET": "b"}))
    assert line == ("env UPLOADER_STORAGE_BACKEND: storage.backend s3 needs the s3 extra: "
                    "pip install 'resumable-uploader[s3]'")


def test_missing_bucket_stops_the_server_at_start(tmp_path: Path, s3_server) -> None:  # noqa: F811
    """It used to start, report ready only on /readyz, and answer init 500."""
    config = s3_server.config("no-such-bucket")
    env = {f"UPLOADER_S3_{k.upper()}": str(v) for k, v in config.items()}
    env.update({"UPLOADER_STORAGE_BACKEND": "s3", "UPLOADER_EXPIRY_ENABLED": "false",
                "UPLOADER_STORAGE_DATA_DIR": str(tmp_path / "d")})
    proc = run(tmp_path, "serve", "--port", "1", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"uploader: s3.bucket 'no-such-bucket' does not exist at {config['endpoint_url']}"


@pytest.mark.parametrize("name", ["UPLOADER_URL", "UPLOADER_TOKEN", "UPLOADER_CLIENT_STATE"])
def test_the_clients_variables_are_not_server_settings(name: str) -> None:
    """One rule: every UPLOADER_* variable is a setting except the client's
    own (UPLOADER_URL, UPLOADER_TOKEN, UPLOADER_CLIENT_*). The test suite's
    own variables are TEST_UPLOADER_*, outside both."""
    load_config(None, env={name: "x"})
    client_cli = (Path(__file__).parent.parent / "uploader" / "client_cli.py").read_text()
    assert f'"{name}"' in client_cli or "UPLOADER_CLIENT_" in name


def test_every_env_name_the_client_reads_is_one_the_server_ignores() -> None:
    import re
    client_cli = (Path(__file__).parent.parent / "uploader" / "client_cli.py").read_text()
    names = set(re.findall(r'"(UPLOADER_[A-Z_]+)"', client_cli))
    assert names  # the client does read some
    for name in names:
        load_config(None, env={name: "x"})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(None, env={"UPLOADER_TEST_MYSQL_DSN": "x"})
