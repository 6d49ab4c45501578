"""The CLI surface: help, version, exit codes, plan output, doctor, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import HARBOUR, REPO


def _modules_after(argv: list[str]) -> set[str]:
    code = ("import sys\nfrom longvid.cli import main\nsys.argv = " + repr(["longvid", *argv]) +
            "\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('MODULES:' + ','.join(m for m in ('torch', 'diffusers', 'transformers', "
            "'numpy') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("MODULES:"), out.stderr
    return set(filter(None, line.removeprefix("MODULES:").split(",")))


def test_plan_and_help_never_import_torch():
    quickstart = str(REPO / "storyboards" / "quickstart.yaml")  # procworld
    assert _modules_after(["plan", quickstart]) == set()
    assert _modules_after(["plan", quickstart, "--json"]) == set()
    assert _modules_after(["plan", str(HARBOUR)]) == set()  # tiny
    assert _modules_after(["--help"]) == set()
    assert _modules_after(["render", "--help"]) == set()


def test_version_and_help(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("longvid 0.")
    code, out, _ = cli("-h")
    assert code == 0
    for command in ("render", "plan", "extend", "doctor"):
        assert command in out
    assert "130 interrupted" in out


def test_usage_errors_exit_2(cli):
    assert cli("render", "--no-such-flag")[0] == 2
    assert cli("extend", "x.mp4")[0] == 2  # --seconds is required
    assert cli("frobnicate")[0] == 2


def test_plan_json_describes_the_timeline(cli):
    code, out, _ = cli("plan", HARBOUR, "--json")
    plan = json.loads(out)
    assert code == 0
    assert plan["total_frames"] == 192 and plan["fps"] == 16 and plan["duration_s"] == 12.0
    assert [s["id"] for s in plan["shots"]] == ["harbour", "pier", "market", "harbour-again"]
    assert plan["forwards"] == len(plan["segments"]) * plan["steps"]
    assert {"requested_frame", "frame", "dropped"} <= set(plan["switches"][1])


def test_plan_table_shows_switches_and_work(cli):
    code, out, _ = cli("plan", HARBOUR)
    assert code == 0
    assert "Prompt switches" in out and "+1f" in out and "transformer forwards" in out
    assert "crossfade 8f" in out


def test_a_long_plan_table_shows_its_first_and_last_100_rows(cli, tmp_path):
    """A terminal gains nothing from thousands of rows (rich took 10 s for 13,000): beyond
    200 the tables show the first and last 100 and say how many are left out."""
    shots = "".join(f"  - {{id: s{i}, duration: 2s, prompt: p{i % 3}, transition: cut}}\n"
                    for i in range(260))
    sb = tmp_path / "long.yaml"
    sb.write_text("version: 1\nresolution: 32x32\nshots:\n" + shots)
    plan = json.loads(cli("plan", sb, "--json")[1])
    n = len(plan["segments"])
    assert n > 200 and len(plan["shots"]) == 260
    code, out, err = cli("plan", sb)
    assert code == 0, err
    table = out[out.index("Segments"):out.index(f"{n - 200:,} segments not shown")]
    rows = [int(line.split()[0]) for line in table.splitlines()
            if line.split() and line.split()[0].isdigit()]
    assert rows == list(range(100)) + list(range(n - 100, n)) and "..." in table
    assert f"{n - 200:,} segments not shown (the first and last 100 are)" in " ".join(
        out.split())
    assert "60 shots not shown" in out and "s159 " not in out and "s259 " in out
    short = tmp_path / "short.yaml"
    short.write_text("version: 1\nresolution: 32x32\nshots:\n" + shots[:shots.index("s5,")
                                                                      - 10])
    code, out, _ = cli("plan", short)
    assert code == 0 and "not shown" not in out and "s4 " in out


def test_plan_preset_override_and_unknown_preset(cli):
    code, _, err = cli("plan", HARBOUR, "--preset", "nope")
    assert code == 3 and "unknown preset 'nope'" in err and "choose one of: " in err
    assert "tiny" in err.split("choose one of: ")[1] and "skyreels-df-1.3b" in err


def test_doctor_reports_the_machine(cli):
    code, out, _ = cli("doctor", "--json")
    info = json.loads(out)
    assert code == 0
    assert {"python", "torch", "diffusers", "cuda", "ram_available_gib", "disk_free_gib",
            "ffmpeg", "hf_cache", "presets"} <= set(info)
    assert info["presets"]["tiny"]["fits"] is True and info["ffmpeg"]
    code, out, _ = cli("doctor")
    assert code == 0 and "ffmpeg" in out and "tiny" in out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "longvid", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.startswith("longvid ")


def test_plan_table_fits_80_columns_one_line_per_segment(tmp_path):
    import os

    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "longvid", "plan", str(HARBOUR)], env=env,
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    plan = json.loads(subprocess.run([sys.executable, "-m", "longvid", "plan", str(HARBOUR),
                                      "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    rows = [line.split() for line in lines[lines.index(next(x for x in lines if x.startswith(
        "Segments"))):] if line.split()[:1] and line.split()[0].isdigit()]
    # every segment on exactly one row, its shot id in full, its seed shortened visibly
    assert [int(r[0]) for r in rows] == [s["index"] for s in plan["segments"]]
    assert [r[2] for r in rows] == [s["shot_id"] for s in plan["segments"]]
    assert all(r[-1].endswith("…") and str(s["seed"]).startswith(r[-1][:-1])
               for r, s in zip(rows, plan["segments"], strict=True))


def test_doctor_shows_the_hub_cache_weights_are_read_from(cli, tmp_path, monkeypatch):
    from longvid.hub import hub_cache_dir

    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert json.loads(cli("doctor", "--json")[1])["hf_cache"] == str(tmp_path / "home" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    info = json.loads(cli("doctor", "--json")[1])
    assert info["hf_cache"] == str(tmp_path / "elsewhere") == str(hub_cache_dir())
