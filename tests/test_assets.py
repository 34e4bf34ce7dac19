"""Which copy of the page's files a run serves: the checkout's in a source
run, the packaged ones in an installed one, and a clear error with neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.assets import REQUIRED, AssetsMissing, find_assets

ROOT = Path(__file__).resolve().parent.parent


def _tree(base: Path) -> None:
    for name in REQUIRED:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text("x")


def test_a_source_run_serves_the_checkout() -> None:
    assets = find_assets()
    assert (assets.templates, assets.static) == (ROOT / "templates", ROOT / "web")


def test_an_installed_package_serves_its_own_copies(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "uploader"
    _tree(package)
    assets = find_assets(package)
    assert (assets.templates, assets.static) == (package / "templates", package / "web")


def test_a_checkout_is_preferred_over_stale_copies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    _tree(tmp_path)
    _tree(tmp_path / "uploader")
    assert find_assets(tmp_path / "uploader").static == tmp_path / "web"


def test_missing_files_are_named(tmp_path: Path) -> None:
    package = tmp_path / "uploader"
    _tree(package)
    (package / "templates" / "index.html").unlink()
    with pytest.raises(AssetsMissing, match=r"templates/index.html under .*: reinstall"):
        find_assets(package)
