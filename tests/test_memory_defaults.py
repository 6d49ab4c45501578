"""Which memory each preset plans with: untrained keyframe injection is off by default.

The three Hub presets whose recall was never trained (skyreels-df, wan-vace, anyflow-far)
plan with `memory_latents: 0` and say so; a preset option turns it back on. procworld's
memory is trained; tiny's is on (a random-weight test model); the causal presets have
none. A `recall` on a preset without active memory is a plan warning that says what to do.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO, write

HARBOUR = REPO / "storyboards" / "return-to-harbour.yaml"  # its last shot recalls the first


def plan_json(cli, storyboard, preset):
    code, out, err = cli("plan", storyboard, "--preset", preset, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("preset", ["skyreels-df-1.3b", "skyreels-df-1.3b-lowvram",
                                    "skyreels-df-1.3b-gguf-q8", "wan-vace-1.3b",
                                    "anyflow-far-1.3b"])
def test_untrained_injection_is_off_by_default(cli, preset):
    plan = plan_json(cli, HARBOUR, preset)
    assert plan["memory_latents"] == 0 and plan["memory"] == "opt-in untrained"
    assert plan["max_tokens"] == max(s["context_latents"] + s["num_latents"]
                                     for s in plan["segments"]) * plan["width"] * \
        plan["height"] // 256  # no memory latents in the largest window
    (warning,) = [w for w in plan["warnings"] if "recall" in w]
    assert "keeps memory off" in warning and "memory_latents: 2" in warning
    assert "harbour-return" in warning


@pytest.mark.parametrize(("preset", "kind", "latents"), [
    ("procworld", "trained", 4), ("tiny", "untrained", 2), ("procworld-window", "none", 0),
    ("tiny-causal", "none", 0), ("longlive-1.3b", "none", 0)])
def test_every_preset_says_which_memory_it_has(cli, preset, kind, latents):
    plan = plan_json(cli, HARBOUR, preset)
    assert (plan["memory"], plan["memory_latents"]) == (kind, latents)
    recall_warnings = [w for w in plan["warnings"] if "recall" in w]
    if latents:
        assert not recall_warnings
    else:
        assert len(recall_warnings) == 1 and "has no memory" in recall_warnings[0]


def test_a_preset_option_opts_in(cli, tmp_path):
    source = (REPO / "presets" / "skyreels-df-1.3b.yaml").read_text()
    opted = source.replace("options:\n", "options:\n  memory_latents: 2\n", 1)
    assert opted != source
    preset = write(tmp_path / "skyreels-memory.yaml", opted)
    plan = plan_json(cli, HARBOUR, str(preset))
    assert plan["memory_latents"] == 2 and plan["memory"] == "opt-in untrained"
    assert not [w for w in plan["warnings"] if "recall" in w]
    last = plan["segments"][-1]
    assert last["recall"] == ["harbour"]


def test_human_plan_names_the_memory(cli):
    code, out, _ = cli("plan", HARBOUR, "--preset", "wan-vace-1.3b")
    assert code == 0
    assert "memory: opt-in untrained (off;" in " ".join(out.split())
    code, out, _ = cli("plan", HARBOUR, "--preset", "procworld")
    assert "memory: trained" in out and "opt-in" not in out


def test_every_shipped_preset_names_a_known_memory_kind():
    from longvid.backends import caps_of
    from longvid.backends.base import MEMORY_KINDS
    from longvid.presets import available_presets, load_preset

    kinds = {name: caps_of(load_preset(name)).memory_kind for name in available_presets()}
    assert set(kinds.values()) <= set(MEMORY_KINDS)
    assert kinds["procworld"] == "trained" and kinds["tiny"] == "untrained"
