"""The pose-free ProcMem variants' memory mechanics: budgets, what memory holds, no pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longvid.backends.procworld.variants import descriptor, mag, malt, pfp
from longvid.backends.procworld.variants.common import MEMORY_TOKENS, TOKENS_PER_FRAME, WIDTH
from longvid.backends.procworld.variants.generator import History, MemoryWorldModel
from longvid.backends.procworld.variants.io import load_variant, save_variant
from longvid.backends.procworld.world import held_out_seeds, make_world, render
from longvid.bench import trajectories as tr
from longvid.bench.retrieval import describe_frames
from longvid.bench.train_variants import motion_of

CONTEXT_TOKENS = 4 * TOKENS_PER_FRAME  # 256, as window and memory


@pytest.fixture(scope="module")
def world() -> np.ndarray:
    return make_world(held_out_seeds(1)[0])


def _history(lengths: list[int], seed: int = 0) -> History:
    g = torch.Generator().manual_seed(seed)
    frames = [torch.rand(n, 3, 32, 32, generator=g) * 2 - 1 for n in lengths]
    motions = [torch.randint(-1, 2, (n, 2), generator=g) for n in lengths]
    return History.from_frames(frames, motions)


def comp_frames(hist: History, item: int) -> torch.Tensor:
    """The frames (T, 3, 32, 32) of one History item (no padding)."""
    from longvid.backends.procworld.model import WorldModel

    p = hist.patches[item][hist.valid[item]]  # (T, 64, 48)
    return WorldModel.unpatchify(p)


@pytest.fixture(scope="module")
def models() -> dict[str, MemoryWorldModel]:
    torch.manual_seed(0)
    return {kind: MemoryWorldModel(kind).eval() for kind in ("pfp", "mag", "malt")}


@pytest.mark.parametrize("kind", ["pfp", "mag", "malt"])
def test_every_learned_memory_gives_the_generator_256_context_tokens(models, kind):
    model = models[kind]
    with torch.no_grad():
        memory, _ = model.build_memory(_history([5, 20]))
        cache = model.encode(torch.zeros(2, 2, 3, 32, 32), torch.zeros(2, 2, 2, dtype=torch.long),
                             memory)
    assert memory.shape == (2, MEMORY_TOKENS, WIDTH)
    assert all(k.shape[2] == CONTEXT_TOKENS and v.shape[2] == CONTEXT_TOKENS for k, v in cache)


def test_the_compressor_has_a_fixed_token_count_whatever_the_history_length(models):
    comp = models["pfp"].memory
    with torch.no_grad():
        shapes = {n: comp(*(lambda h: (h.patches, h.motion, h.valid))(_history([n]))).shape
                  for n in (1, 3, 32, 70)}
        short_h, long_h = _history([6]), _history([40], seed=1)
        padded_h = History.from_frames(
            [comp_frames(short_h, 0), comp_frames(long_h, 0)],
            [short_h.motion[0], long_h.motion[0]])
        short, padded = (comp(h.patches, h.motion, h.valid) for h in (short_h, padded_h))
    assert set(shapes.values()) == {(1, MEMORY_TOKENS, WIDTH)}
    # left padding beside a longer item changes nothing of the short item's memory
    assert torch.allclose(short[0], padded[0], atol=1e-5)


def test_the_compressor_reads_old_frames_and_its_decoder_is_trained_on_them(models):
    comp = models["pfp"].memory
    hist = _history([40])
    changed = History(hist.patches.clone(), hist.motion, hist.valid)
    changed.patches[0, 2] += 1.0  # 38 frames back
    with torch.no_grad():
        a, b = comp(hist.patches, hist.motion, hist.valid), comp(
            changed.patches, changed.motion, changed.valid)
        loss = comp.recon_loss(a, hist.patches, hist.valid, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)
    assert loss.ndim == 0 and loss > 0


def test_mag_slots_hold_the_newest_complete_block_and_its_last_frame(models):
    model = models["mag"]
    assert [mag.newest_block(t) for t in (4, 7, 8, 15, 16, 33)] == [None, None, 0, 0, 1, 3]
    n = 21  # blocks [0, 8) and [8, 16) complete: the slot is block 1, frames 8..15
    hist = _history([n, 9])  # item 1 (left-padded) has block 0 only
    with torch.no_grad():
        base, _ = model.build_memory(hist)
        block = hist.patches[0, 8:16][None]
        slot = model.memory.slot(block, hist.motion[0, 8:16][None])[0]
        assert torch.allclose(base[0, TOKENS_PER_FRAME:], slot, atol=1e-5)
        pad = 21 - 9
        slot1 = model.memory.slot(hist.patches[1, pad:pad + 8][None],
                                  hist.motion[1, pad:pad + 8][None])[0]
        assert torch.allclose(base[1, TOKENS_PER_FRAME:], slot1, atol=1e-5)
        for frame, expect_change in ((3, False), (17, False), (0, True), (12, True)):
            changed = History(hist.patches.clone(), hist.motion, hist.valid)
            changed.patches[0, frame] += 1.0
            mem, _ = model.build_memory(changed)
            assert (not torch.allclose(mem[0], base[0], atol=1e-6)) == expect_change, frame
        short, _ = model.build_memory(_history([6]))  # no complete block: the learned filler
        assert torch.equal(short[0, TOKENS_PER_FRAME:], model.memory.empty)


def test_malt_memory_has_a_fixed_size_and_changes_only_through_its_update(models):
    rec = models["malt"].memory
    hist = _history([12, 30])
    with torch.no_grad():
        mem = rec(hist.patches, hist.motion, hist.valid)
        assert mem.shape == (2, MEMORY_TOKENS, WIDTH)
        by_hand = rec.initial(1)
        for i in range(30 - 12, 30):  # item 0's own frames, one update each
            by_hand = rec.update(by_hand, hist.patches[:1, i], hist.motion[:1, i])
        none = rec(hist.patches, hist.motion, torch.zeros_like(hist.valid))
    assert torch.allclose(mem[:1], by_hand, atol=1e-5)
    assert torch.equal(none, rec.initial(2))  # no frame, no update, no change
    assert malt.TBPTT_FRAMES < 30 and malt.MEMORY_NOISE > 0


def test_malt_training_truncates_backprop_through_time(models):
    rec = models["malt"].memory
    hist = _history([3 * malt.TBPTT_FRAMES])
    patches = hist.patches.clone().requires_grad_(True)
    mem = rec(patches, hist.motion, hist.valid, torch.Generator().manual_seed(0))
    mem.sum().backward()
    grad_per_frame = patches.grad.abs().sum(dim=(0, 2, 3))
    assert torch.all(grad_per_frame[:2 * malt.TBPTT_FRAMES] == 0)  # cut off
    assert torch.all(grad_per_frame[2 * malt.TBPTT_FRAMES:] > 0)


def test_descriptor_picks_and_offsets_read_pixels_and_motion_only(world):
    rng = np.random.default_rng(3)
    traj = tr.out_and_back(rng, 10)
    frames = render(world, traj.poses)
    desc = describe_frames(frames)
    t = traj.num_frames - 3  # on the way back: the place was seen on the way out
    idx, offsets = descriptor.select(frames[:t], desc, motion_of(traj.poses), t)
    # the same frames and motion with every absolute pose shifted give the same picks
    shifted = traj.poses + np.array([7, -3])
    assert descriptor.select(frames[:t], desc, motion_of(shifted), t)[0] == idx
    assert np.array_equal(descriptor.select(frames[:t], desc, motion_of(shifted), t)[1], offsets)
    # picks are views of the target's place, and registration places them exactly
    assert idx[2:] == [t - 2, t - 1]
    true_offsets = traj.poses[idx] - traj.poses[t]
    assert np.array_equal(offsets, true_offsets)
    assert all(abs(int(traj.poses[i][0] - traj.poses[t][0])) + abs(
        int(traj.poses[i][1] - traj.poses[t][1])) <= 4 for i in idx[:2])


def test_recent_offsets_come_from_the_last_motions():
    poses = np.array([[10, 10], [11, 10], [12, 11], [12, 12], [11, 13]])
    assert np.array_equal(descriptor.recent_offsets(motion_of(poses), 4, 2), poses[2:4] - poses[4])


def test_weights_round_trip_without_the_training_only_decoder(models, tmp_path):
    path = tmp_path / "procworld-pfp.safetensors"
    save_variant(models["pfp"], "pfp", path, {"train": "{}"})
    loaded, meta = load_variant(path)
    assert meta["variant"] == "pfp" and isinstance(loaded, MemoryWorldModel)
    hist = _history([9])
    with torch.no_grad():
        a, _ = models["pfp"].build_memory(hist)
        b, _ = loaded.build_memory(hist)
    assert torch.allclose(a, b, atol=2e-2)  # fp16 storage
    assert pfp.HISTORY_FRAMES >= pfp.RECON_FRAMES >= 32


def test_the_bench_scores_every_variant_at_one_token_budget(tmp_path):
    from longvid.backends.procworld.model import WorldModel, save_model
    from longvid.bench.procmem import BenchConfig, run
    from longvid.bench.variant_gen import VARIANTS, weights_name

    torch.manual_seed(0)
    for name in ("window", "retrieval-oracle"):
        save_model(WorldModel(), tmp_path / weights_name(name), {"train": "{}"})
    save_variant(WorldModel(), "retrieval-descriptor",
                 tmp_path / weights_name("retrieval-descriptor"), {"train": "{}"})
    for kind in ("pfp", "mag", "malt"):
        save_variant(MemoryWorldModel(kind), kind, tmp_path / weights_name(kind), {"train": "{}"})
    cfg = BenchConfig(test_worlds=1, trajectories=1, euler_steps=1, retrieval_trajectories=1,
                      long_trajectories=1, loop_trajectories=1)
    result = run(cfg, tmp_path)
    assert list(result["variants"]) == list(VARIANTS)
    assert {v["context_tokens"] for v in result["variants"].values()} == {CONTEXT_TOKENS}
    assert [n for n, v in result["variants"].items() if not v["pose_free"]] == ["retrieval-oracle"]
    for v in result["variants"].values():
        assert set(v) >= {"revisit", "novel", "long", "loop", "retention", "params",
                          "ms_per_frame"}
        assert v["params"] >= 3_000_000 and v["ms_per_frame"] > 0
        assert "33-64" in v["retention"]  # the long trajectory reaches a 64-frame gap
    assert result["window"] is result["variants"]["window"]
    assert result["memory"] is result["variants"]["retrieval-oracle"]
    assert result["pose_free_goal"]["best"] in VARIANTS
    (tmp_path / weights_name("malt")).unlink()
    cfg = BenchConfig(test_worlds=1, trajectories=1, euler_steps=1, retrieval_trajectories=1,
                      long_trajectories=0, loop_trajectories=0)
    assert run(cfg, tmp_path)["variants_missing"] == ["malt"]


@pytest.mark.parametrize("variant", ["retrieval-descriptor", "pfp", "mag", "malt"])
def test_training_is_reproducible_from_the_seed(tmp_path, variant):
    from safetensors.torch import load_file

    from longvid.bench.train import TrainConfig
    from longvid.bench.train_variants import train_pose_free

    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        cfg = TrainConfig(variant=variant, steps=5, batch=3, warmup_steps=1, seed=seed,
                          train_worlds=2)
        record = train_pose_free(cfg, tmp_path / name, log=lambda line: None)
        assert record["steps"] == 5 and np.isfinite(record["loss_last_25"])
        return load_file(str(tmp_path / name))

    a, b, c = weights(0, "a.safetensors"), weights(0, "b.safetensors"), weights(1, "c.safetensors")
    assert a.keys() == b.keys() and not any(".decoder." in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
