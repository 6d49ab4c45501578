"""The tiny backend: real diffusers Wan classes at a tiny size, run on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longvid.backends import available, backend_class, register
from longvid.backends.base import BackendCaps, BackendOptions, SegmentRequest
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


def test_registry_serves_builtins_and_plugins_alike():
    assert available()["tiny"].caps.takes_context

    class Other:
        name = "other-test-backend"
        caps = BackendCaps(native_fps=8, any_fps=False, latent_stride_t=4, max_latents=5,
                           context_latents=1, size_multiple=32, max_side=256,
                           takes_context=False, tokens_per_latent_px=256)
        Options = BackendOptions

    register(Other)
    assert backend_class("other-test-backend") is Other
    with pytest.raises(ValueError, match="registered twice"):
        register(type("Clash", (), {"name": "other-test-backend", "Options": BackendOptions}))
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        backend_class("nope")
