"""ProcMem: exact worlds and trajectories, metrics, retrieval, the shipped models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from longvid.backends.procworld.retrieval import select_context
from longvid.backends.procworld.world import (
    FRAME_PX,
    PATCH_PX,
    crop,
    held_out_seeds,
    make_world,
    render,
    train_seeds,
)
from longvid.bench import trajectories as tr
from longvid.bench.metrics import (
    PSNR_CAP_DB,
    gap_bucket,
    precision_at_k,
    psnr_db,
    retention_curve,
    ssim,
)
from longvid.bench.retrieval import describe_frames, rank_by_descriptor, retrieval_precision


@pytest.fixture(scope="module")
def world() -> np.ndarray:
    return make_world(held_out_seeds(1)[0])


def test_worlds_are_bit_exact_from_the_seed_and_differ_across_seeds(world):
    again = make_world(held_out_seeds(1)[0])
    assert world.dtype == np.uint8 and world.shape == (384, 384, 3)
    assert np.array_equal(world, again)
    assert not np.array_equal(world, make_world(held_out_seeds(2)[1]))
    assert not set(train_seeds(64)) & set(held_out_seeds(64))
    assert len(np.unique(world.reshape(-1, 3), axis=0)) > 1000  # textured, not flat


def test_crops_are_patch_aligned_views_of_the_world(world):
    assert np.array_equal(crop(world, (3, 5)), world[3 * PATCH_PX:3 * PATCH_PX + FRAME_PX,
                                                     5 * PATCH_PX:5 * PATCH_PX + FRAME_PX])
    with pytest.raises(ValueError, match="outside the world"):
        crop(world, (0, 89))


@pytest.mark.parametrize("direction", range(8))
def test_out_and_back_revisits_earlier_frames_exactly(world, direction):
    rng = np.random.default_rng(direction)
    traj = tr.out_and_back(rng, out_steps=16)
    frames = render(world, traj.poses)
    n = traj.given_frames - 1
    assert traj.num_frames == 2 * n + 1
    assert np.all(np.abs(np.diff(traj.poses, axis=0)).max(axis=1) == 1)  # one patch per frame
    for k in range(1, n + 1):
        assert np.array_equal(frames[n + k], frames[n - k])
    gaps = [tr.last_seen_gap(traj.poses, t) for t in range(n + 1, traj.num_frames)]
    assert gaps == [2 * k for k in range(1, n + 1)]


def test_loop_and_detour_return_to_the_start_and_the_control_never_does():
    rng = np.random.default_rng(0)
    for kind in ("loop", "detour_revisit"):
        traj = tr.sample(kind, rng, 6)
        assert np.array_equal(traj.poses[-1], traj.poses[0])
    control = tr.straight(rng, out_steps=16)
    assert all(tr.last_seen_gap(control.poses, t) is None for t in range(control.num_frames))
    with pytest.raises(ValueError, match="choose one of"):
        tr.sample("spiral", rng, 4)


def test_the_entering_strip_is_the_leading_patch_column_or_an_l():
    right = np.array([[0, 0], [0, 1], [1, 2]])  # a step right, then a diagonal one
    mask = tr.entering_mask(right, 1)
    assert mask.sum() == FRAME_PX * PATCH_PX and mask[:, -PATCH_PX:].all()
    assert tr.entering_mask(right, 2).sum() == 2 * FRAME_PX * PATCH_PX - PATCH_PX ** 2
    assert tr.entering_mask(right, 0).all()


def test_psnr_and_ssim_on_known_inputs():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert psnr_db(frame, frame) == PSNR_CAP_DB
    assert ssim(frame, frame) == pytest.approx(1.0)
    target = np.full((32, 32, 3), 100, dtype=np.uint8)
    off_by_10 = target + 10  # MSE 100 exactly
    assert psnr_db(off_by_10, target) == pytest.approx(10 * np.log10(255**2 / 100))
    signs = rng.choice([-10, 10], size=target.shape)  # noise of std 10, MSE 100
    assert psnr_db((target + signs).astype(np.uint8), target) == pytest.approx(28.1308, abs=1e-3)
    assert ssim(frame, 255 - frame) < 0.0 < ssim(frame, np.clip(frame + 8, 0, 255)) < 1.0


def test_retention_buckets():
    assert [gap_bucket(g) for g in (1, 4, 5, 9, 17, 32, 64, 65)] == \
        ["1-4", "1-4", "5-8", "9-16", "17-32", "17-32", "33-64", None]
    curve = retention_curve([2, 3, 6, 20, 99], [30.0, 20.0, 10.0, 5.0, 1.0])
    assert curve == {"1-4": 25.0, "5-8": 10.0, "17-32": 5.0}
    assert list(curve) == ["1-4", "5-8", "17-32"]


def test_retrieval_finds_the_known_answer(world):
    traj = tr.out_and_back(np.random.default_rng(1), out_steps=16)
    frames = render(world, traj.poses)
    assert precision_at_k([3, 7], {7}, 1) == 0.0 and precision_at_k([3, 7], {7}, 2) == 0.5
    # frame 20 of the return shows exactly what frame 12 showed: the descriptor finds it
    descriptors = describe_frames(frames)
    assert rank_by_descriptor(descriptors, 20, bank_frames=18)[0] == 12
    # the pose oracle is right by construction; the descriptor should be nearly as good
    result = retrieval_precision([traj], [frames])
    assert result["oracle"]["precision_at_1"] == 1.0
    assert result["descriptor"]["precision_at_1"] >= 0.8
    assert result["oracle"]["queries"] == 16  # every return frame 17..32; no out frame


def test_context_selection_has_the_same_budget_and_memory_recalls_the_exact_view():
    traj = tr.out_and_back(np.random.default_rng(2), out_steps=16)
    t = 28  # 11 frames into the return: out of the window's reach
    assert select_context("window", traj.poses, t) == [24, 25, 26, 27]
    memory = select_context("memory", traj.poses, t)
    assert len(memory) == 4 and memory[-2:] == [26, 27]
    assert any(np.array_equal(traj.poses[i], traj.poses[t]) for i in memory[:2])
    assert 32 - t in memory  # the out-phase frame at the same pose


def test_training_steps_reduce_the_loss():
    import torch

    from longvid.backends.procworld.model import CONTEXT_NOISE, WorldModel, to_model
    from longvid.bench.train import sample_batch

    torch.manual_seed(0)
    worlds = [make_world(s) for s in train_seeds(2)]
    ctx, ctx_poses, target, target_pose = sample_batch(np.random.default_rng(0), worlds,
                                                       "memory", batch=4)
    model = WorldModel()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x1, noise, t = to_model(target), torch.randn(4, 3, 32, 32), torch.rand(4)
    x_t = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * x1
    ctx_x = to_model(ctx) + CONTEXT_NOISE * torch.randn(4, 4, 3, 32, 32)
    losses = []
    for _ in range(8):
        cache = model.encode_context(ctx_x, torch.from_numpy(ctx_poses))
        v = model.velocity(x_t, t, torch.from_numpy(target_pose), cache)
        loss = torch.mean((v - (x1 - noise)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


def test_bench_memory_quick_json_scores_the_shipped_models(cli):
    from longvid.backends.procworld.model import WEIGHTS_DIR, load_model

    for variant in ("window", "memory"):
        model, meta = load_model(WEIGHTS_DIR / f"procworld-{variant}.safetensors")
        assert json.loads(meta["train"])["variant"] == variant
    # --help stays instant: no torch import
    probe = ("import sys; from typer.testing import CliRunner; from longvid.cli import app; "
             "r = CliRunner().invoke(app, ['bench', 'memory', '--help']); "
             "print(r.exit_code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.split() == ["0", "False"]

    code, stdout, _ = cli("bench", "memory", "--quick", "--json")
    assert code == 0
    result = json.loads(stdout)
    for variant in ("window", "memory"):
        for region in ("revisit", "novel"):
            assert 5.0 < result[variant][region]["psnr"] < PSNR_CAP_DB
            assert -1.0 <= result[variant][region]["ssim"] <= 1.0
            assert 5.0 < result[variant][region]["strip_psnr"] < PSNR_CAP_DB
        assert "1-4" in result[variant]["retention"]
    for method in ("descriptor", "oracle"):
        assert 0.0 <= result["retrieval"][method]["precision_at_1"] <= 1.0
    # issue 15: the six shipped variants, one context budget
    variants = result["variants"]
    assert list(variants) == ["window", "retrieval-oracle", "retrieval-descriptor", "pfp", "mag",
                              "malt"]
    assert "variants_missing" not in result
    assert {v["context_tokens"] for v in variants.values()} == {256}
    assert [n for n, v in variants.items() if not v["pose_free"]] == ["retrieval-oracle"]
    for v in variants.values():
        for region in ("revisit", "novel"):
            assert set(v[region]) >= {"psnr", "ssim"}
        assert 5.0 < v["revisit"]["psnr"] < PSNR_CAP_DB
        assert "33-64" in v["retention"] and v["params"] > 3_000_000
    assert set(result["gain_db"]) == {"revisit", "novel"}
