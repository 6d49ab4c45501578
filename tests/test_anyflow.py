"""The anyflow-far backend on a tiny AnyFlow-FAR checkpoint in a local Hub cache.

The checkpoint is written in the Hub's own cache layout under the real repo id and
loaded offline through the code path a real download takes. Windows are checked
against diffusers' AnyFlowFARPipeline encoding its own prompt; context, memory and
prompt blends are checked by what reaches the transformer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write
from hubfixture import (
    ANYFLOW_REPO,
    assert_frames_close,
    install_tiny_anyflow,
    offline_env,
    pipeline_frames,
)

from longvid.backends.anyflow_far import AnyFlowFARBackend, chunk_partition
from longvid.backends.base import SegmentRequest
from longvid.presets import load_preset

TEST_PRESET = """\
name: anyflow-test
backend: anyflow-far
fps: 16
resolution: 32x32
steps: 2
guidance_scale: 1.0
min_vram_gib: 0
options:
  max_sequence_length: 16
  max_latents: 8
  context_latents: 4
  memory_latents: 2  # the opt-in memory, so a render exercises recall
hub:
  repo: %(repo)s
  revision: main
  verified: false
  files: [model_index.json, scheduler/*.json, tokenizer/*, text_encoder/*.json,
          text_encoder/*.safetensors*, transformer/*.json, transformer/*.safetensors*,
          vae/*.json, vae/*.safetensors*]
"""
PROMPT, OTHER = "a lighthouse in fog", "a red sunset"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    install_tiny_anyflow(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    return cache


def preset_file(tmp_path):
    return write(tmp_path / "anyflow-test.yaml", TEST_PRESET % {"repo": ANYFLOW_REPO})


@pytest.fixture
def backend(hub_cache, tmp_path) -> AnyFlowFARBackend:
    loaded = AnyFlowFARBackend()
    loaded.load(load_preset(str(preset_file(tmp_path))))
    loaded.prepare([PROMPT, OTHER], "", 1.0)
    return loaded


def request(seed, n, context=None, memory=None, prompt=PROMPT, **kw) -> SegmentRequest:
    return SegmentRequest(prompt=prompt, negative_prompt="", num_latents=n,
                          context=context, width=32, height=32, seed=seed, steps=2,
                          guidance_scale=1.0, fps=16, memory=memory, **kw)


def no_progress(i, n):
    pass


def differs(a, b) -> bool:
    """Windows are bit-identical for identical inputs (asserted below), so any gap above
    float noise comes from the input that changed."""
    return (a - b).abs().max().item() > 1e-5


def test_chunk_partition_follows_the_trained_layout():
    assert chunk_partition(0, 0, 21, 3) == [1, 3, 3, 3, 3, 3, 3, 2]  # the released default
    assert chunk_partition(0, 4, 17, 3) == [1, 3, 3, 3, 3, 3, 3, 2]
    assert chunk_partition(2, 4, 4, 3) == [1, 1, 1, 3, 3, 1]
    assert chunk_partition(1, 0, 5, 3) == [1, 1, 3, 1]


def test_windows_match_diffusers_anyflow_pipeline(backend):
    """The backend runs on cached embeddings, its own noise and partition; the pipeline
    encodes the prompt itself. A take start, then [memory | context | new]."""
    from diffusers import AnyFlowFARPipeline

    pipe = AnyFlowFARPipeline.from_pretrained(backend.folder)
    pipe.set_progress_bar_config(disable=True)
    common = {"prompt": PROMPT, "height": 32, "width": 32, "num_inference_steps": 2,
              "output_type": "latent", "max_sequence_length": 16}

    steps = []
    first = backend.generate(request(5, 8), lambda i, n: steps.append((i, n)))
    assert first.latents.shape == (1, 16, 8, 4, 4) and first.frames.shape == (29, 32, 32, 3)
    assert steps == [(i, 8) for i in range(1, 9)]  # 4 chunks x 2 steps
    theirs = pipe(num_frames=29, generator=torch.Generator().manual_seed(5),
                  chunk_partition=[1, 3, 3, 1], **common).frames
    torch.testing.assert_close(first.latents, theirs, rtol=1e-5, atol=1e-5)

    context, memory = first.latents[:, :, -4:], first.latents[:, :, [0, 2]]
    cont = backend.generate(request(6, 4, context, memory), no_progress)
    assert cont.latents.shape == (1, 16, 4, 4, 4) and cont.frames.shape == (16, 32, 32, 3)
    generator = torch.Generator().manual_seed(6)
    noise = torch.randn((1, 16, 8, 4, 4), generator=generator)
    noise = torch.cat([torch.randn((1, 16, 2, 4, 4), generator=generator), noise], dim=2)
    prefix = torch.cat([memory, context], dim=2).permute(0, 2, 1, 3, 4)
    theirs = pipe(num_frames=37, video_latents=prefix, latents=noise,
                  chunk_partition=[1, 1, 1, 3, 3, 1], **common).frames
    torch.testing.assert_close(cont.latents, theirs[:, :, 6:], rtol=1e-5, atol=1e-5)


def test_context_and_memory_change_the_window(backend):
    first = backend.generate(request(5, 8), no_progress)
    context = first.latents[:, :, -4:]
    cont = backend.generate(request(6, 4, context), no_progress)
    alone = backend.generate(request(6, 4), no_progress)  # the same seed as a fresh take
    assert cont.frames.shape[0] == 16 and alone.frames.shape[0] == 13
    assert differs(cont.latents, alone.latents)
    torch.testing.assert_close(backend.generate(request(6, 4, context), no_progress).latents,
                               cont.latents)  # deterministic per seed
    moved = backend.generate(request(6, 4, -context), no_progress)
    assert differs(moved.latents, cont.latents)

    recalled = backend.generate(request(6, 4, context, first.latents[:, :, :1]), no_progress)
    assert recalled.latents.shape == (1, 16, 4, 4, 4) and recalled.frames.shape[0] == 16
    assert differs(recalled.latents, cont.latents)
    other = backend.generate(request(6, 4, context, first.latents[:, :, 5:6]), no_progress)
    assert differs(other.latents, recalled.latents)


def capture_text(backend):
    """(is a KV-encoding pass, encoder_hidden_states) of every transformer call."""
    seen = []

    def hook(module, args, kwargs):
        flag = kwargs.get("kv_cache_flag") or {}
        seen.append((bool(flag.get("is_cache_step")), kwargs["encoder_hidden_states"].clone()))

    return seen, backend.transformer.register_forward_pre_hook(hook, with_kwargs=True)


def pipeline_embeds(backend, text):
    from diffusers import AnyFlowFARPipeline

    pipe = AnyFlowFARPipeline.from_pretrained(backend.folder)
    return pipe.encode_prompt(text, do_classifier_free_guidance=False,
                              max_sequence_length=16, device="cpu")[0]


def test_context_is_reencoded_under_the_new_prompt(backend):
    """A prompt switch: the carried context's KV cache is rebuilt from the new prompt."""
    first = backend.generate(request(5, 8), no_progress)
    seen, hook = capture_text(backend)
    backend.generate(request(6, 4, first.latents[:, :, -4:], prompt=OTHER), no_progress)
    hook.remove()
    other = pipeline_embeds(backend, OTHER)
    cached = [e for is_cache, e in seen if is_cache]
    assert len(cached) == 3  # context chunks 1 + 3, then the first new chunk of 3
    for embeds in (e for _, e in seen):
        torch.testing.assert_close(embeds, other, rtol=1e-5, atol=1e-6)


def test_blend_prompt_mixes_the_cached_embeddings(backend):
    seen, hook = capture_text(backend)
    plain = backend.generate(request(5, 2), no_progress)
    blended = backend.generate(request(5, 2, blend_prompt=OTHER, blend_weight=0.25),
                               no_progress)
    hook.remove()
    expected = 0.75 * pipeline_embeds(backend, PROMPT) + 0.25 * pipeline_embeds(backend, OTHER)
    assert len(seen) == 10  # two chunks of 1: 2 steps each, and one KV-encoding pass
    torch.testing.assert_close(seen[0][1], pipeline_embeds(backend, PROMPT), rtol=1e-5,
                               atol=1e-6)
    for _, embeds in seen[5:]:
        torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-6)
    assert differs(blended.latents, plain.latents)


def test_a_one_latent_take(backend):
    """The pipeline cannot run a single chunk; a spare latent is generated and dropped,
    which changes nothing because chunks are causal."""
    one = backend.generate(request(7, 1), no_progress)
    two = backend.generate(request(7, 2), no_progress)
    assert one.latents.shape == (1, 16, 1, 4, 4) and one.frames.shape == (1, 32, 32, 3)
    torch.testing.assert_close(one.latents, two.latents[:, :, :1])


def test_render_end_to_end_offline(hub_cache, tmp_path, cli):
    preset = preset_file(tmp_path)
    sb = write(tmp_path / "story.yaml", f"""\
        version: 1
        preset: {preset.name}
        seed: 3
        shots:
          - id: a
            duration: 3s
            prompts: [{{at: 0, text: a harbour}}, {{at: 1.5s, text: a storm}}]
          - {{id: b, duration: 0.5s, prompt: a pier, transition: cut, recall: [a]}}
        """)
    code, out, err = cli("render", sb, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["frames"] == 56 and result["segments"] >= 4
    sidecar = json.loads((tmp_path / "story.json").read_text())
    assert sidecar["versions"]["weights"].startswith(ANYFLOW_REPO + "@")
    last = sorted((Path(result["run_dir"]) / "segments").glob("seg_*.json"))[-1]
    recalled = json.loads(last.read_text())["memory"]  # shot b recalls shot a
    assert recalled and {m["shot"] for m in recalled} == {"a"}
    code, out, _ = cli("render", sb, "--json")
    assert code == 0 and json.loads(out)["resumed_segments"] == result["segments"]


def test_real_preset_needs_a_gpu_on_a_cpu_machine(hub_cache):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(Exception, match="runs on a CUDA GPU") as info:
        AnyFlowFARBackend().load(load_preset("anyflow-far-1.3b"))
    assert info.value.code == 4 and "--preset tiny" in info.value.hint


def test_gguf_transformer_is_refused_before_any_download(tmp_path, monkeypatch):
    """diffusers has no single-file mapping for the FAR transformer: the preset is an
    input error naming the fix, raised before the Hub is asked for anything."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = write(tmp_path / "far-gguf.yaml", TEST_PRESET % {"repo": ANYFLOW_REPO} + (
        "quantization: {transformer: gguf}\n"
        "transformer_gguf: {repo: test/far-gguf, revision: main, file: far-Q8_0.gguf,\n"
        "                   quant_type: Q8_0, verified: false}\n"))
    with pytest.raises(Exception, match="AnyFlowFARTransformer3DModel cannot be loaded from "
                                        "a GGUF file") as info:
        AnyFlowFARBackend().load(load_preset(str(preset)))
    assert info.value.code == 3 and "fp8" in info.value.hint



def test_frames_are_the_pipelines_decode_of_the_window_less_the_context(backend):
    from diffusers import AnyFlowFARPipeline

    pipe = AnyFlowFARPipeline.from_pretrained(backend.folder)
    first = backend.generate(request(5, 5), no_progress)
    assert_frames_close(first.frames, pipeline_frames(pipe, None, first.latents))
    context = first.latents[:, :, -4:]
    cont = backend.generate(request(6, 3, context), no_progress)
    assert_frames_close(cont.frames, pipeline_frames(pipe, context, cont.latents))


def test_a_card_that_cannot_compile_fused_attention_is_exit_4_with_the_fallback(monkeypatch):
    """torch's compiler failing as it does on a 99 KiB-shared-memory card (injected: the
    library call raises its error) stops the preset at load, not with an OOM later."""
    from longvid.backends.anyflow_far import check_fused_attention
    from longvid.errors import ExitCode, ResourceError

    def out_of_resource(*args, **kwargs):
        raise RuntimeError("out of resource: shared memory, Required: 131074, "
                           "Hardware limit: 101376")

    monkeypatch.setattr(torch, "compile", out_of_resource)
    with pytest.raises(ResourceError) as caught:
        check_fused_attention(torch.device("cpu"), torch.float32, 12)
    assert caught.value.code == ExitCode.MISSING_RESOURCE
    assert "Hardware limit: 101376" in str(caught.value)
    assert "skyreels-df-1.3b" in caught.value.hint and "compile_blocks" in caught.value.hint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_attention_compiles_on_this_gpu():
    from longvid.backends.anyflow_far import check_fused_attention

    check_fused_attention(torch.device("cuda"), torch.bfloat16, 128)


def test_compiled_blocks_never_fall_back_to_uncompiled_attention(backend):
    """A window needs several graphs of each compiled block (prefill and denoising,
    chunks of 1 and 3 latents against a growing cache). Dynamo's default of 8 ran out
    on an H100 and ran the block eagerly, where flex attention materializes its scores:
    out of memory at 11.4 GiB. Compiled through longvid (dynamo's eager backend here,
    so no kernels are built), a window completes with the uncompiled window's latents;
    one that needs more graphs than allowed is exit 4, never that quiet fallback."""
    import torch._dynamo

    from longvid.backends import anyflow_far
    from longvid.errors import ExitCode, ResourceError

    config = torch._dynamo.config
    expected = backend.generate(request(3, 4), no_progress)
    torch._dynamo.reset()
    # dynamo's own save-and-restore: the process's other tests see its settings unchanged
    with config.patch(recompile_limit=config.recompile_limit,
                      fail_on_recompile_limit_hit=config.fail_on_recompile_limit_hit):
        try:
            anyflow_far.compile_blocks(backend.transformer, backend="eager")
            assert config.recompile_limit >= anyflow_far.COMPILED_VARIANTS
            compiled = backend.generate(request(3, 4), no_progress)
            torch.testing.assert_close(compiled.latents, expected.latents)

            torch._dynamo.reset()
            config.recompile_limit = 1  # fewer graphs than a window needs
            with pytest.raises(ResourceError) as caught:
                backend.generate(request(3, 4), no_progress)
        finally:
            torch._dynamo.reset()
    assert caught.value.code == ExitCode.MISSING_RESOURCE
    assert "graphs" in str(caught.value) and "skyreels-df-1.3b" in caught.value.hint
