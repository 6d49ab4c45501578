"""Tiny real-architecture checkpoints (SkyReels-V2 DF, Wan2.1 VACE, AnyFlow-FAR), written
into a local Hub cache in the Hub's own layout (benchmarks/hubcache.py) under the real
repo ids; GGUF files are written by benchmarks/checkpoints.py, as for gpu_proof.py."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from checkpoints import storage_of, write_gguf  # noqa: E402, F401 - storage_of for tests
from hubcache import replace_cached_file, write_hub_snapshot  # noqa: E402, F401

SKYREELS_REPO = "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers"
GGUF_REPO = "wsbagnsv1/SkyReels-V2-DF-1.3B-540P-GGUF"
GGUF_FILE = "Skywork-SkyReels-V2-DF-1.3B-540P-Q8_0.gguf"
# Sizes at which quantization really happens: bitsandbytes' CPU nf4 kernel packs
# Linear weights in blocks of 64 inputs x 32 outputs, GGUF Q8_0 in rows of 32.
ALIGNED = {"d_model": 64, "d_kv": 16, "d_ff": 64, "head_dim": 16, "ffn_dim": 64}
SMALL = {"d_model": 32, "d_kv": 8, "d_ff": 37, "head_dim": 12, "ffn_dim": 32}


def tiny_skyreels_components(seed: int = 0, *, block_aligned: bool = False) -> dict:
    import torch
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    from longvid.backends.tiny import _byte_tokenizer

    size = ALIGNED if block_aligned else SMALL
    tokenizer = _byte_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=size["d_model"], d_ff=size["d_ff"],
        d_kv=size["d_kv"], num_heads=4, num_layers=2, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)).eval()
    torch.manual_seed(seed)
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=size["head_dim"],
        in_channels=16, out_channels=16, text_dim=size["d_model"], freq_dim=256,
        ffn_dim=size["ffn_dim"], num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        inject_sample_info=True).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=8.0)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "transformer": transformer,
            "vae": vae, "scheduler": scheduler}


def install_tiny_skyreels(cache: Path, *, block_aligned: bool = False) -> Path:
    """A tiny SkyReels-V2 DF pipeline saved as the real repo id would be; returns the snapshot."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    pipe = SkyReelsV2DiffusionForcingPipeline(
        **tiny_skyreels_components(block_aligned=block_aligned))
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        return write_hub_snapshot(cache, SKYREELS_REPO, Path(tmp))


def install_tiny_gguf(cache: Path, *, original_keys: bool = False, qtype: str = "Q8_0") -> Path:
    """The block-aligned tiny transformer as GGUF_FILE in the community repo's cache entry."""
    transformer = tiny_skyreels_components(block_aligned=True)["transformer"]
    with tempfile.TemporaryDirectory() as tmp:
        write_gguf(Path(tmp) / GGUF_FILE, transformer, original_keys=original_keys,
                   qtype=qtype)
        return write_hub_snapshot(cache, GGUF_REPO, Path(tmp))


VACE_REPO = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


def tiny_vace_components(seed: int = 0, *, block_aligned: bool = False) -> dict:
    import torch
    from diffusers import UniPCMultistepScheduler, WanVACETransformer3DModel

    size = ALIGNED if block_aligned else SMALL
    # the same tiny UMT5, tokenizer and Wan VAE
    parts = tiny_skyreels_components(seed, block_aligned=block_aligned)
    torch.manual_seed(seed)
    parts["transformer"] = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=size["head_dim"],
        in_channels=16, out_channels=16, text_dim=size["d_model"], freq_dim=256,
        ffn_dim=size["ffn_dim"], num_layers=3, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2],
        vace_in_channels=96).eval()
    parts["scheduler"] = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return parts


def install_tiny_vace(cache: Path, *, block_aligned: bool = False) -> Path:
    """A tiny Wan2.1 VACE pipeline saved as the real repo id would be; returns the snapshot."""
    from diffusers import WanVACEPipeline

    pipe = WanVACEPipeline(**tiny_vace_components(block_aligned=block_aligned))
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        return write_hub_snapshot(cache, VACE_REPO, Path(tmp))


ANYFLOW_REPO = "nvidia/AnyFlow-FAR-Wan2.1-1.3B-Diffusers"


def tiny_anyflow_components(seed: int = 0) -> dict:
    import torch
    from diffusers import AnyFlowFARTransformer3DModel, FlowMapEulerDiscreteScheduler

    parts = tiny_skyreels_components(seed)  # the same tiny UMT5, tokenizer and Wan VAE
    torch.manual_seed(seed)
    parts["transformer"] = AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, rope_max_seq_len=32).eval()
    parts["scheduler"] = FlowMapEulerDiscreteScheduler(shift=5.0)
    return parts


def install_tiny_anyflow(cache: Path) -> Path:
    """A tiny AnyFlow-FAR pipeline saved as the real repo id would be; returns the snapshot."""
    from diffusers import AnyFlowFARPipeline

    pipe = AnyFlowFARPipeline(**tiny_anyflow_components())
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        return write_hub_snapshot(cache, ANYFLOW_REPO, Path(tmp))


def offline_env(env, cache, home) -> None:
    """What a render sees offline: the Hub cache `cache`, no network, LONGVID_HOME `home`
    (`env`: pytest's monkeypatch)."""
    env.setenv("HF_HUB_CACHE", str(cache))
    env.setenv("HF_HUB_OFFLINE", "1")
    env.setenv("LONGVID_HOME", str(home))


def pipeline_frames(pipe, context, new):
    """uint8 frames (F, H, W, 3) that diffusers' Wan-family `pipe` makes of the new latents
    `new` (1, 16, n, h, w) continuing `context` (or None): its VAE decode of the
    de-normalized [context | new] and its postprocessing, less the context's frames."""
    import torch

    z = pipe.vae.config.z_dim
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1)
    c = 0 if context is None else context.shape[2]
    window = new if context is None else torch.cat([context, new], dim=2)
    with torch.no_grad():
        video = pipe.vae.decode(window * std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return (frames * 255).round().astype("uint8")[4 * c - 3 if c else 0:]


def assert_frames_close(ours, theirs):
    """Equal up to one 8-bit level: the float path to uint8 rounds in two places."""
    assert ours.shape == theirs.shape
    assert abs(ours.astype(int) - theirs.astype(int)).max() <= 1
