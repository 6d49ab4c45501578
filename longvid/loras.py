"""LoRAs named by a preset or a storyboard: the schema, checked files, their identity.

Torch-free: presets and storyboards load (and `longvid plan` runs) without it. A
local LoRA is checked when its file loads (exists, is a whole safetensors file:
header and every tensor's bytes) and identified by the sha256 of its bytes; a Hub LoRA by
`repo@revision:file` (pin `revision` to a commit for a reproducible render) and
fetched through the same cache and offline rules as model weights (longvid/hub.py)
when a render needs it. Applying them is longvid/backends/lora.py's work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from longvid.errors import ResourceError
from longvid.filecheck import damage, safetensors_header
from longvid.rundir import file_sha256
from longvid.yamlsrc import YamlDoc


class LoraIn(BaseModel):
    """One entry of `loras:` in a preset or a storyboard."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str | None = Field(None, min_length=1)
    repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    file: str | None = Field(None, min_length=1)
    revision: str = "main"
    weight: float = Field(1.0, ge=-10, le=10)

    @model_validator(mode="after")
    def _one_source(self) -> LoraIn:
        if (self.path is None) == (self.repo is None) or (self.repo is None) != (
                self.file is None):
            raise ValueError("a LoRA is `path: file.safetensors`, or `repo: owner/name` with "
                             "`file: name.safetensors`")
        if not (self.path or self.file or "").endswith(".safetensors"):
            raise ValueError("LoRAs are loaded from .safetensors files only (pickle files can "
                             "run code when loaded)")
        return self


@dataclass(frozen=True)
class LoraRef:
    name: str  # `lora_weights:` of a shot refers to it by this name
    weight: float  # the default weight; a shot's `lora_weights` overrides it
    key: str  # identity: sha256 of a local file, or repo@revision:file
    path: str | None = None  # a local file (absolute)
    repo: str | None = None  # or a file of a Hub repo
    revision: str = "main"
    file: str | None = None


class LoraProblem(ValueError):
    def __init__(self, message: str, hint: str, key: str = "") -> None:
        super().__init__(message)
        self.message, self.hint, self.key = message, hint, key


def lora_ref(entry: LoraIn, base: Path) -> LoraRef:
    """The checked LoRA of a `loras:` entry; local paths are relative to `base`."""
    if entry.repo is not None:
        file = str(entry.file)
        name = entry.name or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(file).stem)
        return LoraRef(name, entry.weight, f"{entry.repo}@{entry.revision}:{file}",
                       repo=entry.repo, revision=entry.revision, file=file)
    path = (base / str(entry.path)).resolve()
    if not path.is_file():
        raise LoraProblem(f"LoRA file not found: {path}", "LoRA paths are relative to the file "
                          "that names them", key="path")
    check_safetensors(path)
    name = entry.name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    return LoraRef(name, entry.weight, file_sha256(path), path=str(path))


def check_safetensors(path: Path) -> None:
    """A whole safetensors file (header, tensors, all their bytes) with tensors in it."""
    why = damage(path)
    if why is not None and not why.startswith("not a safetensors file"):
        raise LoraProblem(f"{path.name} is damaged: {why}",
                          "copy or download the LoRA file again: this copy was cut short",
                          key="path")
    read = safetensors_header(path)
    if why is not None or isinstance(read, str) or not any(k != "__metadata__"
                                                           for k in read[0]):
        raise LoraProblem(f"{path.name} is not a safetensors file with tensors in it",
                          "give the LoRA's .safetensors file (as trainers such as "
                          "diffusers, musubi-tuner or ai-toolkit write it)", key="path")


def lora_refs(doc: YamlDoc, entries: list[LoraIn], base: Path) -> tuple[LoraRef, ...]:
    """The checked `loras:` of a preset or storyboard file; exit 3 naming file, line, key."""
    refs: list[LoraRef] = []
    for j, entry in enumerate(entries):
        try:
            ref = lora_ref(entry, base)
        except LoraProblem as exc:
            raise doc.error(("loras", j, exc.key), exc.message, exc.hint) from None
        if any(r.name == ref.name for r in refs):
            raise doc.error(("loras", j), f"two LoRAs are named {ref.name!r}",
                            "give one of them its own `name:` (shots weight LoRAs by name)")
        refs.append(ref)
    return tuple(refs)


def local_file(ref: LoraRef) -> Path:
    """The LoRA's file on this machine; a Hub LoRA comes from the Hub cache, downloaded
    there first unless HF_HUB_OFFLINE is set (then exit 4 saying so)."""
    from longvid import hub

    if ref.path is not None:
        return Path(ref.path)
    source = hub.HubSource(str(ref.repo), ref.revision, (str(ref.file),), verified=False)
    folder = hub.cached_snapshot(source)
    if folder is not None:
        folder = hub.whole(source, folder, download=True, offline_hint=(
            "render once with network access (unset HF_HUB_OFFLINE): it fetches it again"))
    if folder is None:
        if hub.is_offline():
            raise ResourceError(
                f"LoRA {ref.name!r} ({ref.key}) is not in the Hub cache at "
                f"{hub.hub_cache_dir()} and HF_HUB_OFFLINE is set",
                "render once with network access (unset HF_HUB_OFFLINE), or copy the file "
                "next to the storyboard and name it with `path:`")
        folder = hub.download_snapshot(source)
    return folder / str(ref.file)


