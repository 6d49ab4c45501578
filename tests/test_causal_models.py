"""`longvid models pull|list|rm` for the causal presets, whose generators are upstream
pickle `.pt` files: pulled beside the Wan2.1 snapshot and converted once, offline,
against tiny checkpoints in the Hub's own layout under the real repo ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hubfixture import offline_env
from test_causal_wan import LONGLIVE_REPO, SELF_FORCING_REPO, WAN_REPO, install, install_wan

from longvid.backends.causal_weights import DONE


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_file(cache: Path, repo: str, name: str) -> Path:
    found = list((cache / f"models--{repo.replace('/', '--')}" / "snapshots").glob(f"*/{name}"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    install(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    return cache


def test_pull_converts_the_generator_once_and_dry_run_says_so(offline_cache, tmp_path, cli):
    converted = tmp_path / "home" / "cache" / "converted"
    code, out, err = cli("models", "pull", "longlive-1.3b", "--dry-run", "--json")
    listing = json.loads(out)
    assert code == 0, err
    files = {(f["repo"], f["file"]) for f in listing["files"]}
    assert {(LONGLIVE_REPO, "models/longlive_base.pt"), (LONGLIVE_REPO, "models/lora.pt"),
            (WAN_REPO, "model_index.json")} <= files
    assert listing["conversion"]["state"] == "to convert"
    assert not converted.exists()  # a dry run writes nothing
    code, out, _ = cli("models", "pull", "longlive-1.3b", "--dry-run")
    assert code == 0 and "conversion of models/longlive_base.pt + models/lora.pt: to " in out

    code, out, err = cli("models", "pull", "longlive-1.3b", "--json")
    result = json.loads(out)
    assert code == 0, err
    conversion = result["conversion"]
    folder = Path(conversion["folder"])
    assert conversion["state"] == "converted" and folder.parent == converted
    assert (folder / "transformer" / DONE).is_file()
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert conversion["sources_sha256"] == {
        name: sha256(cached_file(offline_cache, LONGLIVE_REPO, name))
        for name in ("models/longlive_base.pt", "models/lora.pt")}
    assert {f["repo"] for f in result["files"]} == {WAN_REPO, LONGLIVE_REPO}
    written = (folder / "transformer" / DONE).stat().st_mtime_ns

    code, out, _ = cli("models", "pull", "longlive-1.3b")
    assert code == 0 and f"already converted: {folder}" in out
    assert (folder / "transformer" / DONE).stat().st_mtime_ns == written
    code, out, _ = cli("models", "pull", "longlive-1.3b", "--dry-run", "--json")
    assert json.loads(out)["conversion"] == {
        "state": "converted", "files": ["models/longlive_base.pt", "models/lora.pt"],
        "folder": str(folder), "note": f"conversion of models/longlive_base.pt + "
                                       f"models/lora.pt: already done in {folder}"}


def test_list_shows_the_download_and_the_conversion_and_rm_removes_both(offline_cache, cli):
    code, out, _ = cli("models", "list", "--json")
    row = {r["preset"]: r for r in json.loads(out)}["self-forcing-1.3b"]
    assert code == 0 and row["cached"] and row["converted"] == []
    generator = next(s for s in row["sources"] if s["role"] == "generator")
    pt = cached_file(offline_cache, SELF_FORCING_REPO, "checkpoints/self_forcing_dmd.pt")
    assert generator["repo"] == SELF_FORCING_REPO and generator["bytes"] == pt.stat().st_size

    assert cli("models", "pull", "self-forcing-1.3b")[0] == 0
    code, out, _ = cli("models", "list", "--json")
    row = {r["preset"]: r for r in json.loads(out)}["self-forcing-1.3b"]
    [conversion] = row["converted"]
    assert conversion["sources_sha256"] == {"checkpoints/self_forcing_dmd.pt": sha256(pt)}
    assert conversion["bytes"] == sum(f.stat().st_size for f in
                                      Path(conversion["path"]).rglob("*") if f.is_file()) > 0
    code, out, _ = cli("models", "list")
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("self-forcing-1.3b "))
    block = "\n".join(lines[at:at + 3])
    assert f"+ generator: {SELF_FORCING_REPO}@main  cached" in block
    assert f"+ converted: {conversion['path']}" in block and sha256(pt)[:12] in block

    code, out, _ = cli("models", "rm", "self-forcing-1.3b")
    assert code == 0 and f"removed {SELF_FORCING_REPO}" in out
    assert f"removed the conversion {conversion['path']}" in out
    assert not Path(conversion["path"]).exists()
    assert not list(offline_cache.glob("models--gdhe17--*"))
    code, _, err = cli("models", "pull", "self-forcing-1.3b")  # offline, no longer cached
    assert code == 4 and "longvid models pull self-forcing-1.3b" in err
    assert "Traceback" not in err


def test_offline_and_not_cached_pull_is_exit_4_with_the_pull_command(tmp_path, monkeypatch,
                                                                    cli):
    cache = tmp_path / "hf" / "hub"
    offline_env(monkeypatch, cache, tmp_path / "home")
    for missing in ("the Wan snapshot", "the generator"):
        if missing == "the generator":
            install_wan(cache)
        code, out, err = cli("models", "pull", "longlive-1.3b")
        assert code == 4, (missing, err)
        assert "longvid models pull longlive-1.3b" in err and "Traceback" not in err
    assert "models/longlive_base.pt of Efficient-Large-Model/LongLive-1.3B" in err
    assert not (tmp_path / "home" / "cache" / "converted").exists()


def test_an_offline_render_without_the_generator_stops_before_writing_anything(
        tmp_path, monkeypatch, cli):
    from conftest import write

    cache = tmp_path / "hf" / "hub"
    install_wan(cache)  # the Wan2.1 snapshot only
    offline_env(monkeypatch, cache, tmp_path / "home")
    out = tmp_path / "out"
    sb = write(out / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", "longlive-1.3b", "--vram", "12")
    assert code == 4, err
    assert "longvid models pull longlive-1.3b" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["s.yaml"]  # no run directory, no video
    assert not (tmp_path / "home" / "cache" / "converted").exists()


@pytest.mark.slow
def test_a_pull_waits_for_another_process_converting_the_same_generator(offline_cache):
    """A Slurm array's first renders all need the conversion: one converts, the others
    wait and read it (before, each converted and deleted the folder another was reading)."""
    import fcntl
    import subprocess
    import sys

    from longvid.backends import causal_weights
    from longvid.backends.causal_wan import preset_checkpoint
    from longvid.presets import load_preset

    ckpt = preset_checkpoint(load_preset("self-forcing-1.3b"))
    sources = [cached_file(offline_cache, SELF_FORCING_REPO, name) for name in ckpt.files]
    wan = cached_file(offline_cache, WAN_REPO, "transformer/config.json").parent.parent
    folder = causal_weights.conversion_folder(ckpt, sources)
    folder.parent.mkdir(parents=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this process is converting
        pull = subprocess.Popen([sys.executable, "-m", "longvid", "models", "pull",
                                 "self-forcing-1.3b", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        said = ""
        while "waiting for another longvid process" not in said:
            line = pull.stderr.readline()
            assert line, f"the pull went on without waiting: {said}"
            said += line
        causal_weights.convert(ckpt, sources, wan, folder)
        mark = (folder / "transformer" / DONE).stat().st_mtime_ns
    out, err = pull.communicate(timeout=300)
    assert pull.returncode == 0, err
    assert json.loads(out)["conversion"]["state"] == "already converted"
    assert (folder / "transformer" / DONE).stat().st_mtime_ns == mark  # read, not redone
