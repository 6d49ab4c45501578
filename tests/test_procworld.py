"""procworld: the camera drives the world model, memory redraws revisits, resume is exact."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import run_longvid, write
from mediacheck import frames_of
from test_cli import _modules_after
from test_resume import start, wait_for
from typer.testing import CliRunner

from longvid.backends.procworld import CENTRE_PATCHES, ProcWorldBackend
from longvid.backends.procworld.world import TEST_SEED_START, crop, make_world
from longvid.bench.metrics import psnr_db
from longvid.errors import StoryboardError
from longvid.plan import make_plan
from longvid.presets import load_preset
from longvid.storyboard import load_storyboard

CAPS = ProcWorldBackend.caps

# out 8 frames and back 8 (the window model's 4 frames forget the way), a cut away,
# then a crossfade whose `recall` brings the camera back to where `back` ended
REVISIT = """\
version: 1
preset: procworld
seed: 5
shots:
  - {id: out, duration: 1s, camera: pan-right, prompt: ignored}
  - {id: back, duration: 1s, camera: pan-left, prompt: ignored}
  - {id: away, duration: 0.5s, transition: cut, camera: tilt-down, prompt: ignored}
  - id: again
    duration: 0.75s
    transition: {type: crossfade, seconds: 0.5}
    recall: [back]
    prompt: ignored
"""


def plan_of(tmp_path: Path, text: str, preset: str = "procworld"):
    return make_plan(load_storyboard(write(tmp_path / "sb.yaml", text)), load_preset(preset),
                     CAPS)


def small_views(video: np.ndarray) -> np.ndarray:
    """Decoded uint8 (F, 256, 256, 3) -> (F, 32, 32, 3): each 8x8 block's mean."""
    f = video.shape[0]
    return video.reshape(f, 32, 8, 32, 8, 3).mean(axis=(2, 4)).round().astype(np.uint8)


def true_view(plan, frame: int, world: np.ndarray) -> np.ndarray:
    take = next(t for t in plan.takes if t.start_frame <= frame < t.end_frame)
    y, x = take.position(frame)
    return crop(world, (CENTRE_PATCHES + y, CENTRE_PATCHES + x))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """REVISIT rendered with the memory and the window model: {preset: (plan, views)}."""
    from longvid.cli import app

    root = tmp_path_factory.mktemp("procworld")
    sb = write(root / "revisit.yaml", REVISIT)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LONGVID_HOME", raising=False)
        for preset in ("procworld", "procworld-window"):
            video = root / f"{preset}.mp4"
            result = CliRunner().invoke(app, ["render", str(sb), "-q", "-p", preset,
                                              "-o", str(video)], catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
            plan = make_plan(load_storyboard(sb), load_preset(preset), CAPS)
            out[preset] = (plan, small_views(frames_of(video)), video.with_suffix(".json"))
    return out


def test_camera_path_follows_moves_cuts_and_recall(tmp_path):
    plan = plan_of(tmp_path, """\
        version: 1
        shots:
          - {id: a, duration: 1s, camera: pan-right, prompt: x}
          - {id: b, duration: 0.5s, camera: {move: tilt-up, speed: 2}, prompt: x}
          - {id: c, duration: 0.5s, transition: cut, prompt: x,
             camera: {move: pan-left, speed: 0.5}}
          - {id: d, duration: 0.5s, transition: cut, recall: [a], prompt: x}
        """)
    a, c, d = plan.takes
    assert a.camera[:8] == tuple((0, x) for x in range(8))  # one step a frame, first frame still
    assert a.camera[8:] == tuple((-2 * k, 7) for k in range(1, 5))  # speed 2 upward
    assert c.camera == ((14, 7), (14, 7), (14, 6), (14, 6))  # a cut jumps half the range down
    assert d.camera == ((0, 7),) * 4  # recall: back where shot a ended
    assert a.camera_new[0] == 2**64 - 1  # the first view is all new
    assert a.camera_new[1] == sum(1 << (8 * i + 7) for i in range(8))  # then the right column
    assert c.camera_new[1] == 0 and d.camera_new == (0,) * 4  # a view seen before
    assert all(s.num_frames == s.num_latents for s in plan.segments)  # one frame a latent
    assert not plan.anti_drift and any("ignores prompts" in w for w in plan.warnings)
    # the work estimate counts one forward per frame, each of 4 context + 1 target frames
    assert plan.forwards == sum(s.num_latents for s in plan.segments) * plan.steps
    assert plan.max_tokens == 5 * 64


def test_camera_moves_it_cannot_follow_are_plan_errors_with_a_fix(tmp_path):
    with pytest.raises(StoryboardError, match="cannot follow `camera: zoom-in`") as exc:
        plan_of(tmp_path, "version: 1\nshots: [{id: a, duration: 1s, camera: zoom-in, "
                          "prompt: x}]\n")
    assert "pan-left" in exc.value.hint
    with pytest.raises(StoryboardError, match=r"reaches \(y=0, x=45\)") as exc:
        plan_of(tmp_path, "version: 1\nshots: [{id: a, duration: 6s, camera: pan-right, "
                          "prompt: x}]\n")
    assert "speed: 0.5" in exc.value.hint


def test_pans_move_the_view_the_right_way(rendered):
    plan, views, _ = rendered["procworld"]
    world = make_world(TEST_SEED_START + 5)
    for f in range(1, 8):  # `out` pans right: what was at x + 1 patch is now at x
        shifted = psnr_db(views[f][:, :-4], views[f - 1][:, 4:])
        assert shifted > psnr_db(views[f][:, 4:], views[f - 1][:, :-4]) + 3
        assert shifted > 22
    for f in range(9, 16):  # `back` pans left
        assert psnr_db(views[f][:, 4:], views[f - 1][:, :-4]) > 22
    assert psnr_db(views[0], true_view(plan, 0, world)) > 35  # a take's first frame: true view


def test_memory_redraws_revisits_and_the_window_forgets(rendered):
    world = make_world(TEST_SEED_START + 5)
    late_return = range(11, 15)  # views at x = 3..0: their left column left view 8+ frames ago
    score = {}
    for preset, (plan, views, _) in rendered.items():
        take = plan.takes[0]
        assert all(take.camera_new[f] == 0 for f in late_return), "nothing here is revealed"
        score[preset] = np.mean([psnr_db(views[f], true_view(plan, f, world))
                                 for f in late_return])
    assert score["procworld"] > 25, score
    assert score["procworld-window"] < score["procworld"] - 6, score


def test_recall_returns_to_the_recalled_place_and_redraws_it(rendered):
    plan, views, sidecar = rendered["procworld"]
    again = plan.takes[-1]
    back = next(s for s in plan.shots if s.id == "back")
    assert again.camera[0] == plan.takes[0].position(back.end_frame - 1)
    assert again.camera_new == (0,) * len(again.camera)  # drawn by the model, not revealed
    memory = json.loads(sidecar.read_text())["segments"][-1]["memory"]
    assert [(m["reason"], m["shot"], m["frame"]) for m in memory][:1] == \
        [("recall", "back", back.end_frame - 1)]
    world = make_world(TEST_SEED_START + 5)
    kept = views[back.end_frame - 1]  # the remembered frame, as it was shown then
    after_dissolve = range(again.start_frame + 2, again.end_frame)
    redrawn = [psnr_db(views[f], kept) for f in after_dissolve]
    assert min(redrawn) > 25, redrawn  # the same place, redrawn from memory
    assert max(psnr_db(views[f], views[back.end_frame + 2]) for f in after_dissolve) < 15
    truth = [psnr_db(views[f], true_view(plan, f, world)) for f in after_dissolve]
    assert min(truth) > 20, truth  # a copy of a copy: each redraw costs a few dB


def test_same_seed_same_frames_and_another_seed_another_world(cli, tmp_path):
    text = "version: 1\npreset: procworld\nseed: {}\nshots: [{{id: a, duration: 0.75s, " \
           "camera: pan-right, prompt: x}}]\n"
    videos = []
    for name, seed in (("one", 1), ("again", 1), ("other", 2)):
        code, _, err = cli("render", write(tmp_path / f"{name}.yaml", text.format(seed)), "-q")
        assert code == 0, err
        videos.append(small_views(frames_of(tmp_path / f"{name}.mp4")))
    assert np.array_equal(videos[0], videos[1])
    assert psnr_db(videos[0][0], videos[2][0]) < 20  # another world
    assert psnr_db(videos[0][0], crop(make_world(TEST_SEED_START + 1),
                                      (CENTRE_PATCHES, CENTRE_PATCHES))) > 35


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_frames(tmp_path):
    text = "version: 1\npreset: procworld\nseed: 3\nshots:\n" + "".join(
        f"  - {{id: s{i}, duration: 0.5s, camera: {move}, prompt: x{extra}}}\n"
        for i, (move, extra) in enumerate([("pan-right", ""), ("pan-right", ""),
                                           ("tilt-down", ", transition: cut"),
                                           ("pan-left", ""), ("static", ", recall: [s1], "
                                                                        "transition: cut"),
                                           ("pan-left", "")]))
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    sb_ref, sb = write(ref_dir / "s.yaml", text), write(dir_ / "s.yaml", text)
    assert run_longvid("render", sb_ref, "-q", cwd=ref_dir).returncode == 0
    segs = dir_ / "s.run" / "segments"

    def done() -> int:
        return len(list(segs.glob("seg_*.json"))) if segs.exists() else 0

    # between segments, then in the middle of writing a file (or, if no write is
    # caught in the act, after two more segments)
    for ready in (lambda: done() >= 2, lambda: any(segs.glob(".*tmp*")) or done() >= 4):
        proc = start(sb, dir_)
        wait_for(proc, ready)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 2 <= done() < 6, "killed after some segments and before the last"
    result = run_longvid("render", sb, "--json", cwd=dir_)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resumed_segments"] >= 2
    assert np.array_equal(frames_of(dir_ / "s.mp4"), frames_of(ref_dir / "s.mp4"))


def test_quickstart_leaves_a_place_and_finds_it_again():
    from conftest import REPO

    from longvid.render import load_job

    _, preset, plan = load_job(REPO / "storyboards" / "quickstart.yaml", None)
    first, away, again = plan.takes
    assert preset.name == "procworld" and plan.duration_s >= 10
    assert max(x for _, x in first.camera) >= 2 * CAPS.camera.view_steps  # out of sight
    assert first.camera[-1] == again.camera[0] == first.camera[first.end_frame - 1]
    assert all(abs(y - again.camera[0][0]) >= CAPS.camera.view_steps for y, _ in away.camera)
    assert set(again.camera_new) == {0}  # every frame of the return redrawn from memory


def test_plan_and_help_stay_torch_free(tmp_path):
    sb = write(tmp_path / "p.yaml", REVISIT)
    assert _modules_after(["plan", str(sb), "--json"]) == set()
    assert _modules_after(["render", "--help"]) == set()
