"""The package layout; metadata and dependencies are in pyproject.toml.

The page's files stay at the top of the repository (templates/, web/), where
they are edited; the build maps them into the package as uploader/templates
and uploader/web so that a wheel serves the page from anywhere
(uploader/assets.py finds them either way).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
WEB_DIRS = sorted(p.relative_to(ROOT) for p in (ROOT / "web").rglob("*") if p.is_dir())

setup(
    packages=find_packages(include=["uploader", "uploader.*"])
    + ["uploader.templates", "uploader.web"]
    + [".".join(("uploader",) + p.parts) for p in WEB_DIRS],
    package_dir={"uploader.templates": "templates", "uploader.web": "web"},
    package_data={
        "uploader": ["openapi.json", "py.typed"],
        "uploader.templates": ["*.html"],
        "uploader.web": ["**/*"],
    },
    include_package_data=False,
)
