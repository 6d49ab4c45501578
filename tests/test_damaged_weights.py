"""Damaged weights: a download cut short, a copy that lost its end, a cache file that is
not what its name says. Each is found before it loads and named: offline, exit 4 with
the command that fixes it; online, only that file is fetched again (from a Hub on the
loopback interface, tests/fakehub.py); longvid's own caches are rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_longvid, write
from fakehub import online_env
from hubfixture import SKYREELS_REPO, install_tiny_skyreels, offline_env
from safetensors.torch import load_file, save_file
from test_causal_models import cached_file
from test_causal_wan import SELF_FORCING_REPO, install
from test_skyreels import half_second_story, preset_file

from longvid.backends.causal_weights import DONE
from longvid.filecheck import damage

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


# --- what filecheck says of each format ------------------------------------------------

@pytest.fixture
def tensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.int64)},
              str(path))
    return path


@pytest.mark.parametrize(("cut", "said"), [
    (lambda n: 3, "not even a safetensors header"),
    (lambda n: 20, "truncated inside its header"),
    (lambda n: n - 1, "truncated: "),
    (lambda n: n // 2 + 40, "truncated: "),
])
def test_a_safetensors_file_cut_short_is_named_damaged(tensors, cut, said):
    assert damage(tensors) is None
    data = tensors.read_bytes()
    tensors.write_bytes(data[:cut(len(data))])
    assert said in str(damage(tensors))


@pytest.mark.parametrize(("data", "said"), [
    (b"\x00garbage" * 8, "not a safetensors file"),
    (b"<html>rate limited</html>" * 4, "not a safetensors file"),
    (len(b'["a", 1]').to_bytes(8, "little") + b'["a", 1]', "not a table of tensors"),
    (len(b'{"a": {"dtype": "F32"}}').to_bytes(8, "little") + b'{"a": {"dtype": "F32"}}',
     "has no data offsets"),
])
def test_a_file_that_is_not_safetensors_is_named_damaged(tmp_path, data, said):
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    assert said in str(damage(path))


def test_bytes_past_what_the_header_describes_are_damage(tensors):
    tensors.write_bytes(tensors.read_bytes() + b"\x00" * 7)
    assert "where its header describes" in str(damage(tensors))


def test_a_gguf_file_cut_short_is_named_damaged(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "t.gguf"
    writer = GGUFWriter(str(path), "wan")
    writer.add_tensor("blk.0.weight", np.arange(4096, dtype=np.float32).reshape(64, 64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert damage(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    assert "truncated" in str(damage(path)) or "not a whole GGUF" in str(damage(path))
    path.write_bytes(b"GGUF" + b"\xff" * 40)
    assert "not a whole GGUF file" in str(damage(path))


def test_a_torch_archive_cut_short_is_damaged_and_a_legacy_pickle_is_left_to_torch(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"generator": {"w": torch.ones(64, 64)}}, path)
    assert damage(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert "zip directory is missing" in str(damage(path))
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    assert damage(path) is None  # torch.load(weights_only=True) judges the old format


def test_json_that_does_not_parse_is_damaged(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": 1}')
    assert damage(path) is None
    path.write_text('{"a": ')
    assert "not valid JSON" in str(damage(path))


@pytest.mark.parametrize("lfs", [True, False])
def test_a_small_hub_blob_is_checked_against_the_hash_it_is_named_by(tmp_path, lfs):
    from huggingface_hub.utils.sha import git_hash

    data = b"\x00\x01sentencepiece model bytes" * 10
    name = hashlib.sha256(data).hexdigest() if lfs else git_hash(data)
    blob = tmp_path / "models--a--b" / "blobs" / name
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    link = tmp_path / "models--a--b" / "snapshots" / "c0ffee" / "tokenizer" / "spiece.model"
    link.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, link.parent), link)
    assert damage(link) is None
    blob.write_bytes(data[:-1] + b"\x02")  # one byte changed, any format
    assert "differ from the Hub's hash" in str(damage(link))
    (tmp_path / "elsewhere.model").write_bytes(b"not in a Hub cache")
    assert damage(tmp_path / "elsewhere.model") is None


# --- offline: exit 4 naming the file, before any work ----------------------------------

@pytest.fixture
def offline(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    snapshot = install_tiny_skyreels(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    preset = preset_file(tmp_path)
    story = half_second_story(tmp_path)
    return snapshot, preset, story


def cut(link: Path) -> None:
    blob = link.resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize(("name", "spoil", "said"), [
    (WEIGHTS, cut, "truncated: "),
    ("scheduler/scheduler_config.json", lambda p: p.resolve().write_text("{"), "not valid JSON"),
    ("tokenizer/tokenizer.json", lambda p: p.resolve().write_bytes(
        p.resolve().read_bytes().replace(b'"', b"'", 1)), "not valid JSON"),
])
def test_an_offline_render_with_a_damaged_file_is_exit_4_naming_it_and_writes_nothing(
        offline, tmp_path, cli, name, spoil, said):
    snapshot, preset, story = offline
    spoil(snapshot / name)
    code, _, err = cli("render", story)
    flat = " ".join(err.split())
    assert code == 4, err
    assert f"{name} ({said}" in flat and f"longvid models pull {preset}" in flat, flat
    assert not (tmp_path / "story.run").exists() and not (tmp_path / "story.mp4").exists()


def test_models_list_and_a_dry_run_pull_show_the_damaged_file(offline, cli):
    snapshot, preset, _ = offline
    cut(snapshot / WEIGHTS)
    code, out, _ = cli("models", "pull", preset, "--dry-run", "--json")
    states = {f["file"]: f["state"] for f in json.loads(out)["files"]}
    assert code == 0 and states[WEIGHTS] == "damaged"
    assert {s for f, s in states.items() if f != WEIGHTS} == {"cached"}
    code, out, err = cli("models", "pull", preset)  # offline: cannot fetch it again
    assert code == 4 and WEIGHTS in err
    code, out, _ = cli("models", "list", "--json")  # the built-in SkyReels preset, same repo
    row = {r["preset"]: r for r in json.loads(out)}["skyreels-df-1.3b"]
    assert code == 0 and not row["cached"]
    assert [d["file"] for d in row["sources"][0]["damaged"]] == [WEIGHTS]
    code, out, _ = cli("models", "list")
    assert "skyreels-df-1.3b" in out and "damaged file(s): `longvid models pull" in out


def test_a_damaged_prompt_embedding_is_encoded_again(offline, tmp_path, cli):
    _, preset, story = offline
    assert cli("render", story, "-q")[0] == 0
    (embedding,) = (tmp_path / "home" / "cache" / "prompt-embeddings").glob("*.safetensors")
    whole = load_file(str(embedding))["embeds"].clone()  # not a view of the file
    embedding.write_bytes(embedding.read_bytes()[:100])
    other = write(tmp_path / "other.yaml", story.read_text().replace("shots:", "seed: 9\nshots:"))
    code, _, err = cli("render", other, "-q")
    assert code == 0, err
    assert torch.equal(load_file(str(embedding))["embeds"], whole)


def test_a_lora_file_cut_short_is_exit_3_naming_it(tmp_path, cli):
    from loratools import write_tiny_lora

    lora = write_tiny_lora(tmp_path / "style.safetensors")
    lora.write_bytes(lora.read_bytes()[:-10])
    story = write(tmp_path / "s.yaml", """\
        version: 1
        loras: [{path: style.safetensors}]
        shots: [{id: a, duration: 1s, prompt: sea}]
        """)
    code, _, err = cli("plan", story)
    assert code == 3 and "style.safetensors is damaged: truncated:" in err
    assert "copy or download the LoRA file again" in " ".join(err.split())


# --- longvid's converted generator is rebuilt when damaged -----------------------------

def test_a_damaged_conversion_is_converted_again(tmp_path, monkeypatch, cli):
    cache = tmp_path / "hf" / "hub"
    install(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    code, out, err = cli("models", "pull", "self-forcing-1.3b", "--json")
    assert code == 0, err
    folder = Path(json.loads(out)["conversion"]["folder"])
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    whole = {k: v.clone() for k, v in load_file(str(weights)).items()}
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 3])
    code, out, err = cli("models", "pull", "self-forcing-1.3b", "--json")
    assert code == 0, err
    assert json.loads(out)["conversion"]["state"] == "converted"
    again = load_file(str(weights))  # the same tensors (the header's order may differ)
    assert again.keys() == whole.keys() and all(torch.equal(again[k], whole[k]) for k in whole)
    assert (folder / "transformer" / DONE).is_file()
    code, out, _ = cli("models", "pull", "self-forcing-1.3b", "--json")
    assert json.loads(out)["conversion"]["state"] == "already converted"


def test_a_damaged_generator_pt_offline_is_exit_4_naming_it(tmp_path, monkeypatch, cli):
    cache = tmp_path / "hf" / "hub"
    install(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    cut(cached_file(cache, SELF_FORCING_REPO, "checkpoints/self_forcing_dmd.pt"))
    code, _, err = cli("models", "pull", "self-forcing-1.3b")
    flat = " ".join(err.split())
    assert code == 4 and "checkpoints/self_forcing_dmd.pt" in flat and "damaged" in flat, flat
    assert "longvid models pull self-forcing-1.3b" in flat


# --- online: the Hub (on loopback) serves the file again --------------------------------

@pytest.mark.slow
def test_online_a_damaged_file_is_fetched_again_alone_and_the_render_goes_on(fake_hub,
                                                                             tmp_path):
    hub = fake_hub
    env = online_env(tmp_path, hub.endpoint)
    preset = preset_file(tmp_path)
    pulled = run_longvid("models", "pull", preset, "--json", cwd=tmp_path, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert {f["state"] for f in json.loads(pulled.stdout)["files"]} == {"downloaded"}
    assert set(hub.fetched.values()) == {1}  # the first download, each file once
    snapshot = next((tmp_path / "hf" / "hub").glob("models--*/snapshots/*"))
    cut(snapshot / WEIGHTS)

    story = half_second_story(tmp_path)
    done = run_longvid("render", story, "-q", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    # that line alone: no library's loading bars around it
    assert done.stderr.splitlines() == [
        f"{SKYREELS_REPO}: {WEIGHTS} in the Hub cache is damaged; fetching it again"]
    assert hub.fetched[f"{SKYREELS_REPO}/{WEIGHTS}"] == 2
    assert {n for f, n in hub.fetched.items() if not f.endswith(WEIGHTS)} == {1}
    assert damage(snapshot / WEIGHTS) is None and (tmp_path / "story.mp4").is_file()

    cut(snapshot / WEIGHTS)  # `models pull` repairs too, and says what it fetched
    pulled = run_longvid("models", "pull", preset, "--json", cwd=tmp_path, env=env)
    states = {f["file"]: f["state"] for f in json.loads(pulled.stdout)["files"]}
    assert pulled.returncode == 0 and states[WEIGHTS] == "downloaded"
    assert not json.loads(pulled.stdout)["already_cached"]
    assert damage(snapshot / WEIGHTS) is None

    cut(snapshot / WEIGHTS)  # the Hub out of reach: exit 4, the finished video kept
    hub.server.shutdown()
    hub.server.server_close()  # connections refused, as with no network
    video = (tmp_path / "story.mp4").read_bytes()
    other = write(tmp_path / "other.yaml", story.read_text().replace("shots:", "seed: 9\nshots:"))
    again = run_longvid("render", other, "-o", tmp_path / "story.mp4", cwd=tmp_path, env=env)
    assert again.returncode == 4 and "cannot fetch" in again.stderr, again.stderr
    assert (tmp_path / "story.mp4").read_bytes() == video
