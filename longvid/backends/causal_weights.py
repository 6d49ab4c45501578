"""Upstream causal-Wan checkpoints, read once and safely, then only as safetensors.

Self-Forcing, LongLive and MemFlow publish their generators as pickle `.pt` files (a
dict whose `generator` / `generator_ema` entry holds the original Wan keys, `model.`
prefixed; LongLive and MemFlow add a PEFT LoRA file); MAG publishes `from_pretrained`
folders of safetensors in the original Wan key layout, read the same way from there.
longvid reads a `.pt` file only with `torch.load(weights_only=True)`, which builds
tensors and plain containers and refuses anything else (a pickle that would call code
is an error, exit 3). It does so once: picks the generator, strips the prefixes,
merges the LoRA (W += scale * B @ A), renames the keys with diffusers' own Wan
converter, checks them against a `WanTransformer3DModel` of the snapshot's config (no
missing, no unexpected key), and writes a diffusers transformer folder of bf16
safetensors into longvid's cache, with the sources' sha256 and the converter's version.
Every later load reads that folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvid.errors import InputError, ResourceError
from longvid.filecheck import damage
from longvid.hub import HubSource
from longvid.rundir import file_sha256

CONVERTER_VERSION = "1"
DONE = "longvid-conversion.json"  # written last: its presence marks a complete conversion


@dataclass(frozen=True)
class CausalCheckpoint:
    """Where a causal generator lives on the Hub and how its file is laid out."""

    repo: str
    revision: str
    base: str  # the generator's .pt, a path in the repo
    lora: str | None = None  # a PEFT LoRA .pt to merge, or None
    state_keys: tuple[str, ...] = ("generator_ema", "generator")  # first present wins
    lora_scale: float = 1.0  # lora_alpha / r

    @property
    def files(self) -> tuple[str, ...]:
        return (self.base,) + ((self.lora,) if self.lora else ())


def converted_root() -> Path:
    home = os.environ.get("LONGVID_HOME")
    base = Path(home) / "cache" if home else Path.home() / ".cache" / "longvid"
    return base / "converted"


def generator_source(ckpt: CausalCheckpoint) -> HubSource:
    """The checkpoint's files as a Hub download (`longvid models pull`); they are pickles,
    so only `convert` reads them, with weights_only=True."""
    return HubSource(ckpt.repo, ckpt.revision, ckpt.files, verified=True)


def conversion_folder(ckpt: CausalCheckpoint, sources: list[Path]) -> Path:
    """Where the conversion of these downloaded source files lives (converted or not)."""
    # Hub blobs are named by their content's sha256 (or git hash): a cheap identity
    blobs = [Path(os.path.realpath(p)).name for p in sources]
    key = hashlib.sha256("|".join([ckpt.repo, *ckpt.files, *blobs, *ckpt.state_keys,
                                   str(ckpt.lora_scale), CONVERTER_VERSION]).encode())
    return converted_root() / f"{_repo_prefix(ckpt)}{key.hexdigest()[:16]}"


def _repo_prefix(ckpt: CausalCheckpoint) -> str:
    return f"{ckpt.repo.replace('/', '--')}--"


@dataclass(frozen=True)
class Conversion:
    """A finished conversion in longvid's cache."""

    folder: Path
    bytes: int  # the safetensors and config on disk
    sources_sha256: dict[str, str]  # repo path of each source .pt -> its sha256
    converter: str


def conversions(ckpt: CausalCheckpoint) -> list[Conversion]:
    """Every finished conversion of the checkpoint's repo (older revisions included)."""
    found = []
    root = converted_root()
    for folder in sorted(root.glob(f"{_repo_prefix(ckpt)}*")) if root.is_dir() else ():
        done = folder / "transformer" / DONE
        if not done.is_file():
            continue  # an interrupted conversion leaves only a hidden .tmp folder
        try:
            record = json.loads(done.read_text())
        except (ValueError, UnicodeDecodeError):
            continue  # damaged since: the next render converts again
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        found.append(Conversion(folder, size, dict(record.get("sources", {})),
                                str(record.get("converter", ""))))
    return found


def remove_conversions(ckpt: CausalCheckpoint) -> list[Conversion]:
    """Delete every conversion of the checkpoint's repo (finished or interrupted)."""
    gone = conversions(ckpt)
    root = converted_root()
    for folder in root.glob(f"*{_repo_prefix(ckpt)}*") if root.is_dir() else ():
        if folder.name.startswith((_repo_prefix(ckpt), f".{_repo_prefix(ckpt)}")):
            if folder.is_dir():
                shutil.rmtree(folder)
            else:  # a conversion's lock file
                folder.unlink()
    return gone


def hub_file(ckpt: CausalCheckpoint, name: str, label: str) -> Path:
    """A whole file of the checkpoint's repo from the Hub cache; downloaded unless
    offline, and fetched again if its cached copy is damaged."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from longvid.hub import bound_waits, fetch_again, fetch_failed, hub_cache_dir, is_offline

    found = try_to_load_from_cache(ckpt.repo, name, cache_dir=hub_cache_dir(),
                                   revision=ckpt.revision)
    why = damage(Path(found)) if isinstance(found, str) else None
    if isinstance(found, str) and why is None:
        return Path(found)
    if is_offline():
        raise ResourceError(
            f"{name} of {ckpt.repo}@{ckpt.revision} (preset {label!r}) "
            + (f"in the Hub cache is damaged ({why})" if why else
               f"is not in the Hub cache at {hub_cache_dir()}"),
            f"run `longvid models pull {label}` with network access (it fetches the generator "
            f"and converts it once), or `hf download {ckpt.repo} {name} --revision "
            f"{ckpt.revision}`" + (" --force-download" if why else "")
            + " (HF_HUB_OFFLINE is set)")
    bound_waits()
    try:
        if why is not None:
            fetch_again(generator_source(ckpt), [name])
        path = Path(hf_hub_download(ckpt.repo, name, revision=ckpt.revision,
                                    cache_dir=hub_cache_dir()))
    except ResourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any transport, Hub or disk error
        raise fetch_failed(f"{name} of {ckpt.repo}", exc) from None
    if why := damage(path):
        raise ResourceError(f"{name} of {ckpt.repo} was downloaded but is damaged ({why})",
                            "check the disk and HF_ENDPOINT, then run the same command again")
    return path


def converted_transformer(ckpt: CausalCheckpoint, config_folder: Path, label: str) -> Path:
    """The folder holding `transformer/` converted from the checkpoint (converted now if
    this is the first time). `config_folder` is the diffusers snapshot whose
    `transformer/config.json` describes the network."""
    return convert_once(ckpt, config_folder, label)[0]


def convert_once(ckpt: CausalCheckpoint, config_folder: Path, label: str) -> tuple[Path, bool]:
    """(the converted folder, whether this call converted it): what `converted_transformer`
    does, telling `longvid models pull` whether it converted or found the work done."""
    sources = [hub_file(ckpt, name, label) for name in ckpt.files]
    folder = conversion_folder(ckpt, sources)
    if _finished(folder):
        return folder, False
    # one process converts; another that needs the same conversion (a Slurm array's
    # first renders) waits for it, then reads what it wrote
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another longvid process converting {ckpt.files[0]} of "
                  f"{ckpt.repo} into {folder}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _finished(folder):  # by the process this one waited for
            return folder, False
        convert(ckpt, sources, config_folder, folder)  # a damaged conversion is redone
    return folder, True


def _finished(folder: Path) -> bool:
    """A finished conversion whose files are still whole (the cache derives from the Hub
    files, so a damaged one is rebuilt rather than reported)."""
    return (folder / "transformer" / DONE).is_file() and all(
        damage(folder / "transformer" / name) is None
        for name in ("config.json", "diffusion_pytorch_model.safetensors", DONE))


def convert(ckpt: CausalCheckpoint, sources: list[Path], config_folder: Path,
            folder: Path) -> None:
    import torch
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import save_file

    state = generator_state(load_pt(sources[0]), ckpt.state_keys, sources[0].name)
    if ckpt.lora:
        merge_lora(state, load_pt(sources[1]), ckpt.lora_scale, sources[1].name)
    converted = convert_wan_transformer_to_diffusers(state)
    config = WanTransformer3DModel.load_config(config_folder, subfolder="transformer")
    with torch.device("meta"):
        expected = WanTransformer3DModel.from_config(config).state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted)
                   if tuple(expected[k].shape) != tuple(converted[k].shape))
    if missing or unexpected or wrong:
        raise InputError(
            f"{sources[0].name} does not fit the Wan transformer of "
            f"{config_folder.name}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
            + (f" ({len(missing)}/{len(unexpected)}/{len(wrong)} in all)"),
            "check the preset's checkpoint files and base repo")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "transformer").mkdir(parents=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in converted.items()},
              str(tmp / "transformer" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt", "converter": f"longvid-causal {CONVERTER_VERSION}"})
    with open(tmp / "transformer" / "config.json", "w") as f:
        json.dump(dict(config), f, indent=2)
    record = {"repo": ckpt.repo, "revision": ckpt.revision, "converter": CONVERTER_VERSION,
              "sources": {name: file_sha256(path) for name, path in zip(ckpt.files, sources,
                                                                     strict=True)},
              "state_keys": list(ckpt.state_keys), "lora_scale": ckpt.lora_scale}
    (tmp / "transformer" / DONE).write_text(json.dumps(record, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)


def load_pt(path: Path) -> Any:
    """A pickle checkpoint read with weights_only=True: tensors and containers, nothing run.
    A `.safetensors` file (MAG's `from_pretrained` folders) is read as what it is."""
    import torch

    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise InputError(f"{path.name}: cannot read the safetensors file: {exc}",
                             "remove it with `longvid models rm` and pull again") from None

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = next((line.split("error:", 1)[-1].split(". Please")[0].strip()
                    for line in str(exc).splitlines() if "Unsupported" in line),
                   "objects other than tensors")
        raise InputError(f"{path.name}: refused: its pickle asks for more than tensors "
                         f"({why}); nothing in it was run",
                         "longvid reads upstream .pt checkpoints only with "
                         "torch.load(weights_only=True); use the official file") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputError(f"{path.name}: cannot read the checkpoint: {exc}",
                         "remove it with `longvid models rm` and pull again") from None


def generator_state(obj: Any, keys: tuple[str, ...], name: str) -> dict[str, Any]:
    """The generator's tensors with original Wan key names (prefixes stripped)."""
    import torch

    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        top = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{name}: no generator state dict under {list(keys)} (found {top})",
                         "check the preset's checkpoint file")
    state = {}
    for key, value in obj.items():
        key = key.replace("_fsdp_wrapped_module.", "").removeprefix("model.")
        state[key] = value.float()
    return state


def merge_lora(state: dict[str, Any], lora: Any, scale: float, name: str) -> None:
    """W += scale * B @ A for every PEFT pair `base_model.model.<module>.lora_{A,B}.weight`."""
    if isinstance(lora, dict) and isinstance(lora.get("generator_lora"), dict):
        lora = lora["generator_lora"]
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in lora.items() if isinstance(lora, dict) else ():
        key = key.removeprefix("base_model.model.").removeprefix("model.")
        for part in ("lora_A", "lora_B"):
            for suffix in (f".{part}.weight", f".{part}.default.weight"):
                if key.endswith(suffix):
                    pairs.setdefault(key.removesuffix(suffix), {})[part] = value
    if not pairs:
        raise InputError(f"{name}: no LoRA pairs (lora_A/lora_B weights) found",
                         "check the preset's LoRA file")
    for module, pair in sorted(pairs.items()):
        target = f"{module}.weight"
        if set(pair) != {"lora_A", "lora_B"} or target not in state:
            raise InputError(f"{name}: LoRA for {module} has no "
                             + ("base weight" if target not in state else "A/B pair"),
                             "the LoRA must match the base checkpoint")
        delta = pair["lora_B"].float() @ pair["lora_A"].float()  # (out, r) @ (r, in)
        state[target] = state[target] + scale * delta


