"""A plain (non-editable) install carries the presets `render` needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.mark.slow
def test_wheel_ships_the_package_and_its_presets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("longvid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "longvid/presets/tiny.yaml" in names
    assert "longvid/backends/tiny.py" in names and "longvid/cli/render.py" in names
    assert not any(n.startswith(("tests/", "storyboards/", "benchmarks/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "longvid = longvid.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
