"""The repository's docs and code stand alone: nothing points at briefing files outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("../shared", "/work/shared", "DESIGN.md", "FLEET.md", "PEERS.md", "TRACKSOLID_API.md")


def test_nothing_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".sql", ".cfg", ".txt", ""}:
            continue
        if name == "tests/unit/test_docs_stand_alone.py" or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert not found, "the repository must stand alone; these point outside it:\n" + "\n".join(found)
