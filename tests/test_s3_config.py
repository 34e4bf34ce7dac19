"""The s3 config section: defaults, environment overrides, exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_config_yaml() -> None:
    from_file = load_config(ROOT / "config.yaml", env={})
    assert from_file.s3 == load_config(None, env={}).s3
    assert from_file.s3.download == "redirect" and from_file.s3.presign_expiry == 300
    assert from_file.s3.direct is False and from_file.s3.direct_verify == "parts"


def test_environment_overrides() -> None:
    config = load_config(None, env={"UPLOADER_STORAGE_BACKEND": "s3", "UPLOADER_S3_BUCKET": "b",
                                    "UPLOADER_S3_DIRECT": "true",
                                    "UPLOADER_S3_PRESIGN_EXPIRY": "60",
                                    "UPLOADER_S3_DIRECT_VERIFY": "readback"})
    assert (config.storage.backend, config.s3.bucket) == ("s3", "b")
    assert config.s3.direct is True and config.s3.presign_expiry == 60
    assert config.s3.direct_verify == "readback"


def test_secret_stays_out_of_repr() -> None:
    config = load_config(None, env={"UPLOADER_S3_ACCESS_KEY_ID": "AKIA",
                                    "UPLOADER_S3_SECRET_ACCESS_KEY": "hush"})
    assert "hush" not in repr(config)


@pytest.mark.parametrize("overrides, message", [
    ({"storage": {"backend": "s3"}}, "s3.bucket is required when storage.backend is s3"),
    ({"storage": {"backend": "gcs"}}, "storage.backend must be one of: local, s3"),
    ({"s3": {"download": "proxy"}}, "s3.download must be one of: redirect, stream"),
    ({"s3": {"direct_verify": "none"}}, "s3.direct_verify must be one of: parts, readback"),
    ({"s3": {"addressing_style": "x"}}, "s3.addressing_style must be one of: auto, path, virtual"),
    ({"s3": {"presign_expiry": 0}}, "s3.presign_expiry must be between 1 and 604800"),
    ({"s3": {"access_key_id": "a"}},
     "s3.access_key_id and s3.secret_access_key must be given together"),
    ({"s3": {"prefix": "/x"}}, "s3.prefix must not start with /"),
    ({"storage": {"backend": "s3"}, "s3": {"bucket": "b"}, "limits": {"chunk_size_default": "1MiB"}},
     "limits.chunk_size_default must be >= 5MiB when storage.backend is s3"),
])
def test_validation_messages(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    assert str(info.value) == message
