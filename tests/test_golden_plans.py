"""`longvid plan --json` stays exactly what it was: every storyboard under storyboards/ and
tests/data/ with its own preset and with every preset, every invalid storyboard's error,
and 120 random storyboards under four presets, against tests/data/golden/plans.json.gz.

scripts/golden_plans.py writes that file; run it only when a plan is meant to change.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from typer.testing import CliRunner

from longvid.cli import app

GOLDEN = REPO / "tests" / "data" / "golden" / "plans.json.gz"
# Keys of `plan --json` removed on purpose since the golden was written (each one also in
# CHANGELOG.md), dotted from the top of the JSON; lists are entered element by element, so
# "takes.camera" drops `camera` from every take.
REMOVED_FIELDS: set[str] = set()  # each listed under "Removed" in CHANGELOG.md
RANDOM = "<random>"  # stands for the folder the random storyboards are written to
CHECKOUT = "<repo>"  # stands for the repository's folder, which some errors name


def load_golden() -> dict[str, Any]:
    """{"random": {file name: YAML text}, "cases": {"STORYBOARD|PRESET": output}}."""
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


def plan_output(case: str, random_dir: Path) -> dict[str, Any]:
    """Run the case "STORYBOARD|PRESET" ("default": the storyboard's own preset) from the
    repository root: its exit code and JSON output (its text if that is not JSON)."""
    storyboard, preset = case.rsplit("|", 1)
    args = ["plan", storyboard.replace(RANDOM, str(random_dir)), "--json"]
    result = CliRunner().invoke(app, args + ([] if preset == "default" else ["--preset", preset]))
    stdout = result.stdout.replace(str(random_dir), RANDOM).replace(str(REPO), CHECKOUT)
    try:
        return {"code": result.exit_code, "json": json.loads(stdout)}
    except json.JSONDecodeError:
        return {"code": result.exit_code, "text": stdout}


def without(value: Any, dotted: str) -> Any:
    """`value` less the key at the dotted path, entering every element of a list."""
    if isinstance(value, list):
        return [without(item, dotted) for item in value]
    key, _, rest = dotted.partition(".")
    if not isinstance(value, dict) or key not in value:
        return value
    if not rest:
        return {k: v for k, v in value.items() if k != key}
    return value | {key: without(value[key], rest)}


GOLDEN_DATA = load_golden() if GOLDEN.exists() else {"random": {}, "cases": {}}


def test_the_golden_covers_the_shipped_storyboards():
    storyboards = {case.rsplit("|", 1)[0] for case in GOLDEN_DATA["cases"]}
    assert {"storyboards/quickstart.yaml", "tests/data/harbour.yaml"} <= storyboards
    assert sum(case.startswith(RANDOM) for case in GOLDEN_DATA["cases"]) >= 400


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("random")
    for name, text in GOLDEN_DATA["random"].items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("case", sorted(GOLDEN_DATA["cases"]))
def test_plan_json_matches_the_golden(case, random_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the cases name storyboards relative to the repository
    expected = GOLDEN_DATA["cases"][case]
    if "json" in expected:
        for dotted in REMOVED_FIELDS:
            expected = expected | {"json": without(expected["json"], dotted)}
    assert plan_output(case, random_dir) == expected


def test_removing_a_field_strips_it_inside_lists():
    plan = {"takes": [{"index": 0, "camera": [[0, 0]]}, {"index": 1}], "fps": 16}
    assert without(plan, "takes.camera") == {"takes": [{"index": 0}, {"index": 1}], "fps": 16}
    assert without(plan, "fps") == {"takes": plan["takes"]}
    assert without(plan, "shots.camera") == plan
