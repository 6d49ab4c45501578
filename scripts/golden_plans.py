"""Rewrite tests/data/golden/plans.json.gz, the plans tests/test_golden_plans.py expects.

    python scripts/golden_plans.py

Run it only when a change of the plan is intended, and read the test's failures first:
each one is a plan that changes. A field removed from `plan --json` goes into
CHANGELOG.md (Removed), and stays in the test's REMOVED_FIELDS until this script is run.
The random storyboards are kept from the existing file, so the same inputs are planned.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_golden_plans import GOLDEN, RANDOM, load_golden, plan_output  # noqa: E402
from test_plan import _random_storyboard  # noqa: E402

RANDOM_PRESETS = ("tiny", "skyreels-df-1.3b", "wan-vace-1.3b", "anyflow-far-1.3b")
RANDOM_COUNT = 120


def cases() -> list[str]:
    """ "STORYBOARD|PRESET" for every storyboard and preset ("default": the storyboard's)."""
    presets = ["default"] + sorted(p.stem for p in Path("presets").glob("*.yaml"))
    storyboards = sorted(Path("storyboards").glob("*.yaml")) + sorted(
        Path("tests/data").glob("*.yaml"))
    invalid = sorted(Path("tests/data/invalid").glob("*.yaml"))
    return ([f"{sb}|{preset}" for sb in storyboards for preset in presets]
            + [f"{sb}|default" for sb in invalid])


def main() -> None:
    os.chdir(REPO)
    inputs = load_golden()["random"] if GOLDEN.exists() else {
        f"r{seed:03d}.yaml": _random_storyboard(random.Random(seed))
        for seed in range(RANDOM_COUNT)}
    names = cases() + [f"{RANDOM}/{name}|{preset}"
                       for name in sorted(inputs) for preset in RANDOM_PRESETS]
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in inputs.items():
            (Path(tmp) / name).write_text(text)
        outputs = {case: plan_output(case, Path(tmp)) for case in names}
    data = json.dumps({"random": inputs, "cases": outputs}, sort_keys=True,
                      separators=(",", ":"))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_bytes(gzip.compress(data.encode(), mtime=0))
    planned = sum(1 for out in outputs.values() if out["code"] == 0)
    print(f"{GOLDEN.relative_to(REPO)}: {len(outputs)} cases, {planned} planned")


if __name__ == "__main__":
    main()
