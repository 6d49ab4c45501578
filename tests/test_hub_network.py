"""The Hub over the network, from a Hub on the loopback interface (tests/fakehub.py):
a first pull fetches each file once, and a Hub that takes the connection and never
answers ends in exit 4 within the bound on every wait, not in a render that hangs; a
disk that refuses the download is exit 4 about the disk, and the next pull finishes."""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import run_longvid
from fakehub import online_env
from test_skyreels import half_second_story, preset_file
from test_verify_outputs import limited_writes

from longvid.presets import load_preset


@pytest.mark.slow
def test_a_pull_fetches_every_file_once_and_a_second_pull_none(fake_hub, tmp_path):
    hub = fake_hub
    env = online_env(tmp_path, hub.endpoint)
    preset = preset_file(tmp_path)
    first = run_longvid("models", "pull", preset, "--json", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    served = dict(hub.fetched)
    _, files = hub.repos[next(iter(hub.repos))]
    patterns = load_preset(str(preset)).hub.files
    wanted = {f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)}
    assert {name.split("/", 2)[2] for name in served} == wanted and set(served.values()) == {1}
    listing = json.loads(first.stdout)
    assert not listing["already_cached"]
    assert listing["bytes"] == sum(len(files[f]) for f in wanted)
    again = run_longvid("models", "pull", preset, "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["already_cached"]
    assert dict(hub.fetched) == served  # nothing fetched twice


@pytest.mark.slow
@pytest.mark.parametrize("command", ["render", "pull"])
def test_a_hub_that_never_answers_is_exit_4_not_a_hang(tmp_path, command):
    silent = socket.socket()  # the kernel takes connections; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    env = online_env(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    env["LONGVID_HUB_TIMEOUT_S"] = "1"
    preset = preset_file(tmp_path)
    story = half_second_story(tmp_path)
    args = ("render", story) if command == "render" else ("models", "pull", preset)
    # without the bounds it never returns: the subprocess timeout fails the test
    result = run_longvid(*args, cwd=tmp_path, env=env, timeout=240)
    silent.close()
    assert result.returncode == 4, result.stderr
    assert "cannot fetch" in result.stderr and "check the network" in result.stderr
    assert not (tmp_path / "story.mp4").exists()  # the run may hold its manifest, no video


@pytest.mark.slow
def test_a_download_the_disk_refuses_is_exit_4_about_the_disk_and_a_later_pull_finishes(
        fake_hub, tmp_path):
    env = online_env(tmp_path, fake_hub.endpoint)
    preset = preset_file(tmp_path)
    full = subprocess.run([sys.executable, "-m", "longvid", "models", "pull", str(preset)],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300, preexec_fn=limited_writes(100_000))
    flat = " ".join(full.stderr.split())
    assert full.returncode == 4, flat
    assert "into the Hub cache at" in flat and "File too large" in flat, flat
    assert "free disk space there" in flat and "check the network" not in flat
    again = run_longvid("models", "pull", preset, "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert {f["state"] for f in json.loads(again.stdout)["files"]} <= {"cached", "downloaded"}


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_hub_timeout_is_exit_3_before_any_request(tmp_path, monkeypatch, cli, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("LONGVID_HUB_TIMEOUT_S", value)
    code, _, err = cli("models", "pull", preset_file(tmp_path), "--dry-run")
    assert code == 3 and f"LONGVID_HUB_TIMEOUT_S={value} is not a number of seconds" in err


@pytest.mark.parametrize(("change", "said", "hint"), [
    (("Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers", "Skywork/No-Such-Repo"),
     "RepositoryNotFoundError", "check the preset's `hub.repo`"),
    ("revision: main", "RevisionNotFoundError", "check the preset's `hub.revision`"),
    (("vae/*.json,", "vae/*.json, extra/*.bin.json,"), "has no file matching extra/*.bin.json",
     "check the preset's `hub.files`"),
])
def test_what_the_hub_answers_is_said_with_what_to_change(fake_hub, tmp_path, change, said,
                                                          hint):
    preset = preset_file(tmp_path)
    old, new = change if isinstance(change, tuple) else (change, "revision: v9.9")
    preset.write_text(preset.read_text().replace(old, new))
    done = run_longvid("models", "pull", preset, cwd=tmp_path,
                       env=online_env(tmp_path, fake_hub.endpoint))
    flat = " ".join(done.stderr.split())
    assert done.returncode == 4 and said in flat and hint in flat, flat
