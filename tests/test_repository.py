"""The repository stands alone: its docs and code point only at files it
holds (the first design document lived outside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (".py", ".md", ".js", ".html", ".css", ".json", ".yaml", ".toml", ".in", ".cfg", ".ini")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    names = listed.stdout.splitlines() if listed.returncode == 0 else [
        str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if ".venv" not in p.parts]
    return [ROOT / n for n in names if n.endswith(TEXT) and (ROOT / n).is_file()
            and not n.startswith("tests/")]


def test_no_reference_to_a_file_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in tracked_text_files()
                 if re.search(r"ARCHITECTURE\.md|shared/", p.read_text(errors="replace"))]
    assert offenders == []


def test_every_relative_link_in_the_docs_resolves() -> None:
    docs = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
