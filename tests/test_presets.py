"""Presets: typed backend options, checked when a preset loads, and shown without reprs."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO, write

from longvid.backends import available, caps_of
from longvid.cli.presets import human, type_name
from longvid.presets import available_presets, load_preset

PRESET = """\
name: typo
backend: tiny
fps: 16
resolution: 64x64
steps: 2
options:
  weights_seed: 1
  %s
"""
STORYBOARD = "version: 1\npreset: typo.yaml\nshots: [{id: a, prompt: x, duration: 2s}]\n"


def plan_with_option(tmp_path, cli, option: str) -> tuple[int, str, str]:
    write(tmp_path / "typo.yaml", PRESET % option)
    write(tmp_path / "sb.yaml", STORYBOARD)
    return cli("plan", tmp_path / "sb.yaml")


def test_a_misspelt_option_is_exit_3_naming_file_line_key_and_allowed_keys(tmp_path, cli):
    code, out, err = plan_with_option(tmp_path, cli, "flow_shfit: 9.0")
    assert code == 3 and out == ""
    first = err.splitlines()[0]
    assert "typo.yaml:8" in first and "flow_shfit" in first, err
    assert "did you mean 'flow_shift'?" in err
    for allowed in ("weights_seed", "flow_shift", "max_latents", "context_latents",
                    "memory_latents"):
        assert allowed in err
    assert "Traceback" not in err


def test_a_wrong_type_is_exit_3_naming_the_key(tmp_path, cli):
    code, _, err = plan_with_option(tmp_path, cli, "flow_shift: fast")
    assert code == 3
    assert "typo.yaml:8" in err and "flow_shift" in err and "number" in err, err


@pytest.mark.parametrize(("option", "message"), [
    ("flow_shift: 1e400", "finite number"),  # YAML reads it as infinity
    ("flow_shift: .nan", "finite number"),
    ("flow_shift: true", "valid number"),  # a YAML boolean is no number
    ("max_latents: 2.5", "valid integer"),
])
def test_values_a_yaml_file_would_coerce_are_refused(tmp_path, cli, option, message):
    code, _, err = plan_with_option(tmp_path, cli, option)
    assert code == 3 and "typo.yaml:8" in err and message in err, err


@pytest.mark.parametrize(("option", "message"), [
    ("max_latents: 99", "allows at most 9"),
    ("context_latents: 9", "allows at most 2"),
    ("max_latents: 2\n  context_latents: 2", "leaves no room"),
])
def test_window_options_may_only_shrink_the_backend_window(tmp_path, cli, option, message):
    code, _, err = plan_with_option(tmp_path, cli, option)
    assert code == 3 and message in err, err


def test_window_options_reach_the_plan(tmp_path):
    write(tmp_path / "typo.yaml", PRESET % "max_latents: 5\n  memory_latents: 0")
    preset = load_preset(str(tmp_path / "typo.yaml"))
    caps = caps_of(preset)
    assert (caps.max_latents, caps.context_latents, caps.memory) == (5, 2, None)
    assert preset.options.weights_seed == 1 and preset.options.flow_shift == 3.0


def test_preset_key_is_the_options_as_written():
    """Run keys hash the options a preset writes, so filling in defaults changes no key."""
    preset = load_preset("skyreels-df-1.3b")
    assert preset.options.model_dump(mode="json", exclude_unset=True) == {
        "flow_shift": 8.0, "addnoise_condition": 20, "max_sequence_length": 512}
    # the keys of presets whose settings did not change, as longvid 0ac87f4 computed them
    assert load_preset("tiny").sha256.startswith("98abdfd5b74d")
    assert load_preset("procworld-window").sha256.startswith("81ce9b10bd6f")


def test_every_shipped_preset_validates_against_its_backend():
    for name in available_presets():
        preset = load_preset(name)
        assert isinstance(preset.options, available()[preset.backend].Options), name


def test_presets_show_prints_every_option_without_python_reprs(cli):
    code, out, _ = cli("presets", "show", "skyreels-df-1.3b")
    assert code == 0
    for field in available()["skyreels-df"].Options.model_fields:
        assert re.search(rf"^  {field} ", out, re.M), field
    assert re.search(r"^  flow_shift +8\* +\(unset\) ", out, re.M), out
    assert re.search(r"^  addnoise_condition +20\* +\(0\) ", out, re.M), out
    assert "None" not in out and "{'" not in out and "('" not in out and "[" not in out

    code, out, _ = cli("presets", "show", "skyreels-df-1.3b", "--json")
    rows = {o["name"]: o for o in json.loads(out)["options"]}
    assert rows["flow_shift"] | {"description": ""} == {
        "name": "flow_shift", "type": "number or unset", "value": 8.0, "default": None,
        "set": True, "description": ""}
    assert rows["max_latents"]["set"] is False


@pytest.mark.parametrize(("name", "kind"), [
    ("mag-1.3b", "trained"), ("memflow-1.3b", "trained"), ("longlive-1.3b", "none"),
    ("skyreels-df-1.3b", "opt-in untrained"), ("tiny", "untrained")])
def test_presets_show_names_the_memory_kind(cli, name, kind):
    """The memory `plan` reports for the preset, in both outputs."""
    code, out, _ = cli("presets", "show", name)
    assert code == 0 and re.search(rf"^ +memory_kind: {kind}$", out, re.M), out
    code, out, _ = cli("presets", "show", name, "--json")
    assert code == 0 and json.loads(out)["memory_kind"] == kind


def _doc_tables() -> dict[str, dict[str, list[str]]]:
    """docs/presets.md "Backend options": backend -> option -> [type, default, meaning]."""
    text = (REPO / "docs" / "presets.md").read_text().split("## Backend options", 1)[1]
    tables: dict[str, dict[str, list[str]]] = {}
    backend = ""
    for line in text.splitlines():
        if m := re.match(r"### `([\w-]+)`", line):
            backend = m.group(1)
            tables[backend] = {}
        elif m := re.match(r"\| `(\w+)` \| (.*) \|$", line):
            tables[backend][m.group(1)] = [c.strip() for c in m.group(2).split(" | ")]
    return tables


def test_docs_option_tables_match_the_backends_options():
    tables = _doc_tables()
    assert set(tables) == set(available())
    for name, cls in available().items():
        expected = {field: [type_name(f.annotation), human(f.default), f.description]
                    for field, f in cls.Options.model_fields.items()}
        assert tables[name] == expected, name


@pytest.mark.parametrize(("line", "message"), [("fps: true", "valid integer"),
                                               ("guidance_scale: .inf", "finite number")])
def test_a_presets_own_keys_are_not_coerced_either(tmp_path, cli, line, message):
    text = (PRESET % "flow_shift: 3.0").replace("fps: 16\n", "fps: 16\n" + line + "\n") \
        if line.startswith("guidance") else (PRESET % "flow_shift: 3.0").replace("fps: 16", line)
    write(tmp_path / "typo.yaml", text)
    write(tmp_path / "sb.yaml", STORYBOARD)
    code, _, err = cli("plan", tmp_path / "sb.yaml")
    assert code == 3 and message in err and line.split(":")[0] in err, err

