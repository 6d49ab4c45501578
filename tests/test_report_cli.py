"""`longvid report --json`: the run directory and the PNGs it wrote, as JSON."""

from __future__ import annotations

import json

import pytest
from conftest import write


@pytest.mark.slow
def test_report_json_names_the_run_and_the_pngs(cli, tmp_path):
    sb = write(tmp_path / "one.yaml", """\
        version: 1
        preset: tiny
        resolution: 32x32
        shots:
          - {id: a, prompt: a red harbour, duration: 1s}
        """)
    code, _, err = cli("render", sb, "-o", tmp_path / "one.mp4")
    assert code == 0, err
    code, out, _ = cli("report", tmp_path / "one.mp4", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["run_dir"] == str((tmp_path / "one.run").resolve())
    for key in ("contact_sheet", "drift_plot"):
        assert result[key].endswith(".png") and (tmp_path / result[key]).is_file()


def test_report_json_error_is_json_with_exit_3(cli, tmp_path):
    code, out, _ = cli("report", tmp_path / "missing.mp4", "--json")
    assert code == 3
    assert "no run directory" in json.loads(out)["error"]["message"]
