"""The tiny backend: real diffusers Wan classes at a tiny size, run on the CPU."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from longvid import backends
from longvid.backends import available, backend_class, register
from longvid.backends.base import BackendOptions, SegmentRequest
from longvid.errors import InputError


def request(**kw):
    base = {"prompt": "a red harbour", "negative_prompt": "", "num_latents": 3,
            "context": None, "width": 32, "height": 32, "seed": 1, "steps": 2,
            "guidance_scale": 1.0, "fps": 16}
    return SegmentRequest(**(base | kw))


def test_uses_the_real_diffusers_classes(tiny):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    assert isinstance(tiny.transformer, WanTransformer3DModel)
    assert isinstance(tiny.vae, AutoencoderKLWan)
    assert set(tiny.versions()) >= {"diffusers", "torch", "transformers"}


def test_frames_and_latents_shapes(tiny):
    steps = []
    out = tiny.generate(request(), lambda i, n: steps.append((i, n)))
    assert out.latents.shape == (1, 16, 3, 4, 4)
    assert out.frames.shape == (9, 32, 32, 3) and out.frames.dtype == np.uint8  # 4n-3
    assert steps == [(1, 2), (2, 2)]
    cont = tiny.generate(request(context=out.latents[:, :, -2:], num_latents=2), lambda i, n: 0)
    assert cont.latents.shape == (1, 16, 2, 4, 4) and cont.frames.shape == (8, 32, 32, 3)  # 4n


def test_deterministic_for_a_seed_and_sensitive_to_seed_prompt_context(tiny):
    def run(**kw):
        return tiny.generate(request(**kw), lambda i, n: None)

    a, b = run(), run()
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert not torch.equal(a.latents, run(seed=2).latents)
    assert not torch.equal(a.latents, run(prompt="a blue harbour").latents)  # prompts matter
    ctx = a.latents[:, :, -2:]
    c1, c2 = run(context=ctx), run(context=ctx * 0.5)
    assert not torch.equal(c1.latents, c2.latents)  # the context conditions the segment
    guided = run(guidance_scale=3.0, negative_prompt="blurry")
    assert not torch.equal(a.latents, guided.latents)


def test_encode_frames_gives_context_latents(tiny):
    frames = tiny.generate(request(), lambda i, n: None).frames
    z = tiny.encode_frames(frames[-5:])
    assert z.shape == (1, 16, 2, 4, 4)


PLUGIN = """\
from longvid.backends.base import BackendOptions
from longvid.backends.tiny import TinyWanBackend


class PluginBackend(TinyWanBackend):
    name = "%(name)s"

    class Options(BackendOptions):
        pass


def register_backends(register):
    register(PluginBackend)
"""


def install_plugin(site: Path, package: str, backend_name: str) -> None:
    """A plugin as pip leaves it in a site directory: its module and its dist-info."""
    (site / f"{package}.py").write_text(PLUGIN % {"name": backend_name})
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[longvid.backends]\n{package} = {package}:register_backends\n")


@pytest.fixture
def fresh_registry():
    """Empties the process-wide registry for one test and puts it back afterwards."""
    saved = (dict(backends._registry), backends._loaded)
    backends._registry.clear()
    backends._loaded = False
    yield
    backends._registry.clear()
    backends._registry.update(saved[0])
    backends._loaded = saved[1]


def test_registry_serves_builtins_and_plugins_alike(tmp_path, monkeypatch, fresh_registry):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "longvid_test_plugin", "plugin-test-backend")
    monkeypatch.syspath_prepend(str(site))
    found = [ep.value for ep in entry_points(group="longvid.backends")]
    assert "longvid_test_plugin:register_backends" in found

    served = available()
    assert served["tiny"].caps.takes_context  # the built-ins come through the same hook
    plugin = backend_class("plugin-test-backend")
    assert plugin.__module__ == "longvid_test_plugin" and plugin.caps == served["tiny"].caps
    with pytest.raises(ValueError, match="registered twice"):
        register(type("Clash", (), {"name": "plugin-test-backend", "Options": BackendOptions}))
    with pytest.raises(ValueError, match="declares no `Options`"):
        register(type("Bare", (), {"name": "bare-test-backend"}))
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        backend_class("nope")


def test_a_plugin_that_reuses_a_builtin_name_is_refused_by_name(tmp_path, monkeypatch,
                                                                  fresh_registry):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "longvid_clash_plugin", "tiny")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ValueError) as info:
        available()
    message = str(info.value)
    assert "backend 'tiny' is registered twice" in message
    assert "longvid.backends.tiny.TinyWanBackend" in message
    assert "longvid_clash_plugin.PluginBackend" in message

