"""Streaming decode: a take decoded block by block equals one decode of all its latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Spy, write
from diffusers import AutoencoderKLWan

from longvid.backends.causal_decode import StreamDecoder, to_uint8
from longvid.backends.causal_wan import WAN21_HISTORY_LATENTS, CausalWanBackend
from longvid.backends.tiny_causal import TINY_HISTORY_LATENTS, TinyCausalBackend
from longvid.presets import load_preset


@pytest.fixture(scope="module")
def causal():
    backend = TinyCausalBackend()
    backend.load(load_preset("tiny-causal"))
    backend.prepare(["a red harbour", "a blue harbour"], "", 1.0)
    return backend


def whole_decode(decoder: StreamDecoder, latents: torch.Tensor) -> torch.Tensor:
    """diffusers' own decode of every latent at once: (1, 3, 4n-3, H, W)."""
    with torch.no_grad():
        return decoder.vae.decode(latents * decoder.std + decoder.mean).sample


def matches(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() <= 1e-5


def blocks(decoder: StreamDecoder, latents: torch.Tensor, clear: bool = False) -> torch.Tensor:
    """Decode in blocks of 3 (the first 3, then 3 each), optionally clearing the cache."""
    outs = []
    for a in range(0, latents.shape[2], 3):
        if clear and a:
            decoder.feat_cache = [None] * decoder.convs
        outs.append(decoder.decode(latents[:, :, a:a + 3]))
    return torch.cat(outs, dim=2)


def test_blocks_decoded_as_made_equal_one_decode_of_the_whole(causal):
    torch.manual_seed(0)
    latents = torch.randn(1, 16, 11, 4, 4)  # 3+3+3+2 latents: the last block shorter
    decoder = causal.decoder
    decoder.reset()
    streamed = blocks(decoder, latents)
    whole = whole_decode(decoder, latents)
    assert streamed.shape == whole.shape == (1, 3, 41, 32, 32)
    assert matches(streamed, whole)
    decoder.reset()
    cleared = blocks(decoder, latents, clear=True)  # the cache lost between blocks
    assert not matches(cleared, whole)  # frames differ (the upsamplers even drop some)


@pytest.mark.parametrize("structure", ["tiny-causal", "wan2.1"])
def test_the_carried_history_rebuilds_the_cache_bit_for_bit(causal, structure):
    """A decoder that replays the take's last history_latents latents continues exactly as
    one that decoded the whole take; the old warm-up (the last 2 context latents) does not.
    Wan2.1's VAE is built narrow: width does not change its receptive field in time."""
    if structure == "tiny-causal":
        vae, history = causal.vae, TINY_HISTORY_LATENTS
    else:
        torch.manual_seed(1)
        vae, history = AutoencoderKLWan(base_dim=8).eval(), WAN21_HISTORY_LATENTS
    zeros, ones = torch.zeros(1, 16, 1, 1, 1), torch.ones(1, 16, 1, 1, 1)
    torch.manual_seed(2)
    latents = torch.randn(1, 16, history + 9, 2, 2)
    k = history + 3  # where the resumed segment starts
    whole = StreamDecoder(vae, zeros, ones, history)
    head = whole.decode(latents[:, :, :k])
    tail = whole.decode(latents[:, :, k:])

    resumed = StreamDecoder(vae, zeros, ones, history)
    resumed.follow(latents[:, :, :k])  # keeps the last `history` of them
    assert resumed.tail is not None and resumed.tail.shape[2] == history
    assert torch.equal(resumed.decode(latents[:, :, k:]), tail)
    for short in (2, history - 4):
        warm = StreamDecoder(vae, zeros, ones, history)
        warm.follow(latents[:, :, k - short:k])
        assert not torch.equal(warm.decode(latents[:, :, k:]), tail)
    assert head.shape[2] == 4 * k - 3


def test_a_decoder_that_just_decoded_the_history_does_not_replay_it(causal):
    decoder = causal.decoder
    decoder.reset()
    torch.manual_seed(3)
    latents = torch.randn(1, 16, 6, 2, 2)
    decoder.decode(latents)
    decoder.seconds = 0.0
    decoder.follow(latents)
    assert decoder.seconds == 0.0  # nothing decoded
    decoder.follow(latents * 0.5)  # another past: replayed
    assert decoder.seconds > 0.0 and torch.equal(decoder.tail, latents * 0.5)


def test_a_rendered_take_equals_one_decode_and_a_lost_cache_is_rebuilt(tmp_path, causal):
    """Through the loop: a take of three segments gives the frames of one decode of all its
    latents; a backend that loses its decoder between segments (as a resumed render
    does) rebuilds it from the carried history to the same frames."""
    from longvid.generate import render_segments
    from longvid.render import load_job
    from longvid.rundir import RunDir

    sb = write(tmp_path / "s.yaml", """\
        version: 1
        preset: tiny-causal
        resolution: 32x32
        shots:
          - id: a
            duration: 10s
            prompts: [{at: 0s, text: a red harbour}, {at: 5s, text: a blue harbour}]
        """)
    _, _, plan = load_job(sb, None)
    assert len(plan.segments) >= 3 and len(plan.takes) == 1
    assert plan.segments[-1].first_latent > TINY_HISTORY_LATENTS  # a replay from mid-take

    class Forgetful(Spy):
        def generate(self, req, on_step):
            self.inner.decoder.reset()
            return super().generate(req, on_step)

    frames = []
    for name, wrap in (("kept", Spy), ("lost", Forgetful)):
        spy = wrap(causal)
        run = RunDir(tmp_path / name)
        run.open({"run_key": name})
        list(render_segments(plan, spy, run, crf=18))
        frames.append(np.concatenate([o.frames for o in spy.outputs]))
        if name == "kept":
            assert [r.history is None for r in spy.requests] == [True] + [False] * (
                len(spy.requests) - 1)
            latents = torch.cat([o.latents for o in spy.outputs], dim=2)
    whole = to_uint8(whole_decode(causal.decoder, latents))
    assert frames[0].shape == whole.shape == (4 * latents.shape[2] - 3, 32, 32, 3)
    assert np.abs(frames[0].astype(int) - whole.astype(int)).max() <= 1  # rounding at .5
    assert np.array_equal(frames[0], frames[1])


def test_the_declared_cache_size_is_the_decoder_s(causal):
    """caps.decode's cache size, for a budget: measured on tiny-causal's VAE and on the
    Wan2.1 VAE at its real width (random weights, 2x3 latent pixels)."""
    zeros, ones = torch.zeros(1, 16, 1, 1, 1), torch.ones(1, 16, 1, 1, 1)
    torch.manual_seed(4)
    for vae, caps in ((causal.vae, TinyCausalBackend.caps),
                      (AutoencoderKLWan().eval(), CausalWanBackend.caps)):
        assert caps.decode is not None
        decoder = StreamDecoder(vae, zeros, ones, caps.decode.history_latents)
        decoder.decode(torch.randn(1, 16, 3, 2, 3))
        held = sum(t.numel() for t in decoder.feat_cache if isinstance(t, torch.Tensor))
        assert held == caps.decode.cache_elements_per_latent_px * 2 * 3
