"""Where the page's template and static files are.

The repository's top-level ``templates/`` and ``web/`` are the source of
truth; the build maps them into the package (setup.py), so a wheel carries
copies as ``uploader/templates`` and ``uploader/web``. A source or editable
run serves the checkout's folders (an edit shows at the next reload); an
installed one serves the packaged copies. Neither complete: the server does
not start, so it can never report ready with a broken page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# What the page cannot work without (the rest is loaded by these).
REQUIRED = ("templates/index.html", "web/js/app.js", "web/css/style.css",
            "web/vendor/hash-wasm/md5.umd.min.js")


class AssetsMissing(RuntimeError):
    """The page's files are not where the package expects them."""


@dataclass(frozen=True)
class Assets:
    templates: Path
    static: Path


def find_assets(package_dir: Path = PACKAGE_DIR) -> Assets:
    checkout = package_dir.parent
    # A checkout has pyproject.toml beside the package; site-packages does not.
    bases = ([checkout] if (checkout / "pyproject.toml").is_file() else []) + [package_dir]
    for base in bases:
        if all((base / name).is_file() for name in REQUIRED):
            return Assets(templates=base / "templates", static=base / "web")
    missing = sorted({name for base in bases for name in REQUIRED if not (base / name).is_file()})
    raise AssetsMissing(f"the page's files are missing ({', '.join(missing)} under "
                        f"{' or '.join(str(b) for b in bases)}): reinstall the package, "
                        f"or build it from a full checkout")
