"""`tiny-mag` and `tiny-memflow`: the trained-memory rules as longvid backends, from a
request (recall pinned) to a render killed with -9 and resumed to identical frames."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from conftest import run_longvid, write
from mediacheck import frames_of
from test_resume import start, wait_for

from longvid.backends.base import SegmentRequest
from longvid.backends.tiny_memory import TinyMagBackend, TinyMemFlowBackend
from longvid.presets import load_preset

# a take with a prompt switch, a continue, a cut, and a shot that recalls the first
STORY = """\
version: 1
preset: {preset}
seed: 5
resolution: 32x32
shots:
  - id: dawn
    duration: 4s
    prompts:
      - {{at: 0s, text: a fishing village at dawn}}
      - {{at: 2s, text: the first boats leave the harbour}}
  - {{id: sea, duration: 3s, prompt: a small boat on open water}}
  - {{id: market, duration: 2s, transition: cut, prompt: 'a market square, stalls opening'}}
  - {{id: dusk, duration: 3s, transition: {{type: crossfade, seconds: 0.5}}, recall: [dawn],
     prompt: 'the village at dusk, lanterns lit'}}
"""
BACKENDS = {"tiny-mag": TinyMagBackend, "tiny-memflow": TinyMemFlowBackend}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request):
    b = BACKENDS[request.param]()
    b.load(load_preset(request.param))
    b.prepare(["a red harbour"], "", 1.0)
    return b


def req(**kw):
    base = {"prompt": "a red harbour", "negative_prompt": "", "num_latents": 6,
            "context": None, "width": 32, "height": 32, "seed": 1, "steps": 4,
            "guidance_scale": 1.0, "fps": 16}
    return SegmentRequest(**(base | kw))


def test_recalled_latents_are_pinned_and_change_the_segment(backend):
    torch.manual_seed(0)
    ctx, sink = torch.randn(1, 16, 15, 4, 4), torch.randn(1, 16, 3, 4, 4)
    recalled = torch.randn(1, 16, 2, 4, 4)
    plain = backend.generate(req(context=ctx[:, :, -backend.caps.context_latents:],
                                 sink=sink), lambda i, n: None)
    with_memory = backend.generate(req(context=ctx[:, :, -backend.caps.context_latents:],
                                       sink=sink, memory=recalled), lambda i, n: None)
    cache = backend.engine.cache
    if backend.name == "tiny-mag":  # 2 pinned slots, the ring keeps the other 3
        assert cache.count[0] == {"sink": 2, "pin": 2, "slot": 3}
    else:  # both pinned in the bank, one frame left to MemFlow's retrieval
        labels = [e.label for e in cache.bank[0]]
        assert labels[:2] == [("pin", 0), ("pin", 1)] and len(labels) == 3
        assert labels[2][0] == "block"
    assert not torch.equal(plain.latents, with_memory.latents)
    again = backend.generate(req(context=ctx[:, :, -backend.caps.context_latents:],
                                 sink=sink, memory=recalled), lambda i, n: None)
    assert torch.equal(again.latents, with_memory.latents)  # nothing survives a segment


def test_the_plan_gives_recall_and_the_rule_s_context(tmp_path):
    from longvid.render import load_job

    for name, context in (("tiny-mag", 15), ("tiny-memflow", 9)):
        sb = write(tmp_path / f"{name}.yaml", STORY.format(preset=name))
        _, _, plan = load_job(sb, None)
        assert plan.memory_latents == 2 and plan.context_latents == context
        assert not plan.warnings
        assert plan.segments[-1].recall == ("dawn",)


@pytest.mark.slow  # real processes, killed and resumed
@pytest.mark.parametrize("preset", sorted(BACKENDS))
def test_a_render_with_memory_killed_with_9_resumes_to_identical_frames(tmp_path, preset):
    story = STORY.format(preset=preset)
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    sb_ref, sb = write(ref_dir / "h.yaml", story), write(dir_ / "h.yaml", story)
    assert run_longvid("render", sb_ref, "-q", cwd=ref_dir).returncode == 0
    reference = frames_of(ref_dir / "h.mp4")
    segs = dir_ / "h.run" / "segments"

    def done_count() -> int:
        return len(list(segs.glob("seg_*.json"))) if segs.exists() else 0

    for ready in (lambda: done_count() >= 2,  # between segments
                  lambda: done_count() >= 4 and any(segs.glob(".*tmp*"))):  # mid-write
        proc = start(sb, dir_)
        wait_for(proc, ready, timeout=300)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 2 <= done_count() < 7, "the kills happened between the first and last segments"
    resumed = run_longvid("render", sb, "--json", cwd=dir_)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_segments"] >= 2
    frames = frames_of(dir_ / "h.mp4")
    assert frames.shape == reference.shape == (192, 32, 32, 3)
    assert np.array_equal(frames, reference)
    last = json.loads((segs / "seg_0006.json").read_text())
    assert [m["reason"] for m in last["memory"]][:1] == ["recall"]  # dawn was recalled


def test_a_segment_s_positions_stay_inside_the_rope_table():
    """A segment's stream holds its pins, the sink, the context and its new latents, from
    position 0: within the tiny RoPE table (64) and the real one (1,024)."""
    from longvid.backends.causal_memory_wan import CausalMagBackend, CausalMemFlowBackend

    for cls, table in ((TinyMagBackend, 64), (TinyMemFlowBackend, 64),
                       (CausalMagBackend, 1024), (CausalMemFlowBackend, 1024)):
        caps = cls.caps
        assert caps.sink is not None
        assert caps.memory_latents + caps.sink.latents + caps.max_latents <= table, cls.name
    assert CausalMagBackend.caps.context_latents == 21 * 3  # every block the slots hold


def test_a_take_s_image_is_its_first_latent_and_mag_keeps_it_in_the_sink(backend):
    """The shared engine path: the image latent comes back as given, through one clean
    pass (MAG: the memory model writes it into the sink, as a later segment replays it)."""
    from longvid.backends.base import ShotImages

    first = torch.randn(1, 16, 1, 4, 4)
    out = backend.generate(req(images=ShotImages(first_latent=first)), lambda i, n: None)
    assert torch.equal(out.latents[:, :, :1], first) and out.latents.shape[2] == 6
    assert out.frames.shape[0] == 4 * 6 - 3  # every block decoded, the take's first too
    if backend.name == "tiny-mag":
        assert backend.engine.cache.count[0]["sink"] == 2  # the image and the next latent


def test_a_prompt_switch_re_caches_memflow_s_context_but_not_mag_s(backend):
    """MemFlow follows LongLive (one forward over the context under the new prompt);
    MAG's cache is written under the empty prompt, so a switch replays it unchanged."""
    torch.manual_seed(1)
    ctx, sink = torch.randn(1, 16, 15, 4, 4), torch.randn(1, 16, 3, 4, 4)
    n = backend.caps.context_latents
    kw = {"context": ctx[:, :, -n:], "sink": sink, "context_start": 15 - n + 3,
          "sink_prompt": "a red harbour"}
    plain = backend.generate(req(**kw), lambda i, n: None)
    switched = backend.generate(req(**kw, switched=True), lambda i, n: None)
    assert torch.equal(plain.latents, switched.latents) == (backend.name == "tiny-mag")
