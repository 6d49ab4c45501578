"""`bench revisit`: MAG-Bench's split, find-match scoring, the CSV reader, and a preset end
to end through `extend`'s path (tiny-causal, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write

from longvid.bench.magbench import folder_clips
from longvid.bench.metrics import PSNR_CAP_DB
from longvid.bench.revisit import Clip, Split, procedural_clips, run, split


def test_split_is_mag_benchs_rule():
    # MAG: truncate to (N+3)//12*12-3, switch = ceil((floor(0.75*dur*16)+3)/12)*12-3
    assert split(100, 100 / 16, 16) == Split(frames=93, switch=81)
    assert split(45, 45 / 16, 16) == Split(frames=45, switch=33)
    assert split(161, 10.0, 16) == Split(frames=153, switch=129)
    for cut in (split(n, n / 16, 16) for n in range(21, 300)):  # 4k-3 frames: whole latents
        assert (cut.switch + 3) % 12 == 0 and (cut.frames - cut.switch) % 12 == 0
        assert 0 < cut.switch < cut.frames
    with pytest.raises(ValueError, match="at least 21 frames"):
        split(20, 20 / 16, 16)


def test_procedural_clips_leave_and_return():
    (source,) = procedural_clips(1, 45, (160, 96), 16, seed=3)
    clip = source.load()
    assert clip.frames.shape == (45, 96, 160, 3) and clip.frames.dtype == np.uint8
    for t in range(45):  # the way back retraces the way out
        assert (clip.frames[t] == clip.frames[44 - t]).all()
    assert (clip.frames[0] != clip.frames[22]).mean() > 0.5  # the turn shows another place
    again = procedural_clips(1, 45, (160, 96), 16, seed=3)[0].load()
    assert (again.frames == clip.frames).all()


# Tiny predictors, each a real continuation: it sees only the clip's context frames.
def copies_context(clip: Clip, cut: Split) -> np.ndarray:
    """Remembers: on a leave-and-return path, frame t shows what frame N-1-t showed."""
    n = len(clip.frames)
    return np.stack([clip.frames[:cut.switch][n - 1 - t] for t in range(cut.switch, cut.frames)])


def copies_context_out_of_order(clip: Clip, cut: Split) -> np.ndarray:
    return copies_context(clip, cut)[::-1].copy()


def holds_last_frame(clip: Clip, cut: Split) -> np.ndarray:
    """No memory: the last context frame, frozen."""
    return np.repeat(clip.frames[cut.switch - 1:cut.switch], cut.frames - cut.switch, axis=0)


def ignores_context(clip: Clip, cut: Split) -> np.ndarray:
    return np.full((cut.frames - cut.switch, *clip.frames.shape[1:]), 128, np.uint8)


PREDICTORS = {"copy": copies_context, "copy-shuffled": copies_context_out_of_order,
              "hold": holds_last_frame, "ignore": ignores_context}


def test_a_model_that_remembers_scores_higher():
    clips = procedural_clips(2, 45, (160, 96), 16)
    result = run(clips, list(PREDICTORS), PREDICTORS.__getitem__)
    scores = result["presets"]
    assert result["metric"] == "psnr-find-match"
    assert scores["copy"]["psnr"] == PSNR_CAP_DB and scores["copy"]["ssim"] == pytest.approx(1)
    assert scores["copy-shuffled"] == scores["copy"] | {"wall_s": scores["copy-shuffled"][
        "wall_s"]}  # find-match forgives timing
    assert scores["copy"]["psnr"] > scores["hold"]["psnr"] + 5 > scores["ignore"]["psnr"] + 5
    # (SSIM forgives a flat grey frame on this smooth world: its windows' variance is
    # below SSIM's constant, so only the remembering model is ranked by it)
    assert scores["copy"]["ssim"] > max(scores["hold"]["ssim"], scores["ignore"]["ssim"]) + 0.05
    assert [c["switch"] for c in result["clips"]] == [33, 33]


def test_a_continuation_of_the_wrong_length_is_an_error():
    clips = procedural_clips(1, 45, (160, 96), 16)
    with pytest.raises(RuntimeError, match="expected"):
        run(clips, ["short"], lambda name: lambda clip, cut: clip.frames[:3])


# -- MAG-Bench folders --------------------------------------------------------------------


@pytest.fixture
def bench_folder(tmp_path):
    from longvid.mux import encode_frames

    clip = procedural_clips(1, 45, (64, 48), 16)[0].load()
    encode_frames(clip.frames, tmp_path / "clip one.mp4", 16, 0)
    write(tmp_path / "magbench.csv", 'video_path,raw_caption,duration(sec)\n'
          '"clip one.mp4","a harbour, then the lane",2.8125\n')
    return tmp_path


def test_csv_in_mag_bench_format(bench_folder):
    (source,) = folder_clips(bench_folder, None)
    clip = source.load()
    assert (source.name, clip.caption, clip.duration_s, clip.fps) == (
        "clip one", "a harbour, then the lane", 2.8125, 16)
    assert clip.frames.shape == (45, 48, 64, 3)


@pytest.mark.parametrize(("csv", "where"), [
    ("video_path,caption,duration(sec)\nclip one.mp4,x,2\n", ":1: no column 'raw_caption'"),
    ("video_path,raw_caption,duration(sec)\nclip one.mp4,x,2\nclip one.mp4,x,soon\n",
     ":3: column duration(sec): 'soon'"),
    ("video_path,raw_caption,duration(sec)\n\nmissing.mp4,x,2\n",
     ":3: column video_path: 'missing.mp4' not found"),
    ("video_path,raw_caption,duration(sec)\nclip one.mp4,a, b,2\n", ":2: 4 fields"),
    ("video_path,raw_caption,duration(sec)\nclip one.mp4,x,-1\n", ":2: column duration(sec)"),
    ("video_path,raw_caption,duration(sec)\n", ": no clips listed"),
])
def test_a_bad_csv_is_exit_3_naming_file_line_and_column(bench_folder, cli, csv, where):
    path = write(bench_folder / "magbench.csv", csv)
    code, out, _ = cli("bench", "revisit", bench_folder, "--json")
    assert code == 3
    assert json.loads(out)["error"]["message"].startswith(f"{path}{where}")


def test_a_folder_needs_exactly_one_csv(bench_folder, cli):
    write(bench_folder / "other.csv", "video_path,raw_caption,duration(sec)\n")
    code, out, _ = cli("bench", "revisit", bench_folder, "--json")
    assert code == 3 and "2 .csv files" in json.loads(out)["error"]["message"]
    code, out, _ = cli("bench", "revisit", bench_folder, "--csv", bench_folder / "no.csv",
                       "--json")
    assert code == 3 and "not found" in json.loads(out)["error"]["message"]


# -- a preset end to end ------------------------------------------------------------------


def test_quick_json_on_tiny_causal(cli):
    """One procedural clip through tiny-causal: 33 context frames via `extend`'s path, 12
    generated and scored."""
    code, out, err = cli("bench", "revisit", "--preset", "tiny-causal", "--quick", "--clips",
                         "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "psnr-find-match" and result["source"] == "procedural"
    scores = result["presets"]["tiny-causal"]
    assert 0 < scores["psnr"] < PSNR_CAP_DB and -1 <= scores["ssim"] <= 1
    assert scores["lpips"] is None and scores["clips"] == 1
    (clip,) = result["clips"]
    assert (clip["frames"], clip["switch"], clip["size"]) == (45, 33, [160, 96])
    assert clip["tiny-causal"]["psnr"] == scores["psnr"]
