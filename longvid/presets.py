"""Presets: named model settings in YAML (presets/*.yaml), validated at the edge.

A preset names a backend and the settings a render uses by default (fps,
resolution, steps, guidance, backend options). They ship inside the wheel as
`longvid/presets/`; from a checkout they are read from the top-level `presets/`.
Users may add their own under `$LONGVID_HOME/presets/` or pass a path to a file.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from longvid.backends import backend_class
from longvid.backends.base import BackendOptions, check_window
from longvid.budget import (
    GGUF_BITS_PER_WEIGHT,
    NO_QUANTIZATION,
    TEXT_ENCODER_QUANTS,
    TRANSFORMER_QUANTS,
    MemorySpec,
    Quantization,
)
from longvid.errors import InputError, ResourceError
from longvid.hub import HubSource
from longvid.loras import LoraIn, LoraRef, lora_refs
from longvid.yamlsrc import YamlDoc


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    backend: str
    fps: int
    resolution: tuple[int, int]  # (width, height)
    steps: int
    guidance_scale: float
    min_vram_gib: float  # 0: runs on the CPU
    options: BaseModel = field(default_factory=BackendOptions)  # the backend's `Options`
    hub: HubSource | None = None  # None: nothing to download (embedded weights)
    memory: MemorySpec | None = None  # None: runs on the CPU, no VRAM policy
    source: str = ""
    quantization: Quantization = NO_QUANTIZATION
    transformer_gguf: HubSource | None = None  # files == (the .gguf file,)
    negative_prompt: str = ""  # the model's own, for a storyboard that sets none
    loras: tuple[LoraRef, ...] = ()  # applied to every shot (a storyboard may add more)
    licence: str = ""  # of the weights, as their publisher states it ("": see description)
    non_commercial: bool = False  # True: `plan` and `presets show` warn

    @property
    def hub_sources(self) -> tuple[tuple[str, HubSource], ...]:
        """(role, source) of every Hub download: the main snapshot, then a GGUF file, then
        the preset's Hub LoRAs (so `longvid models pull` fetches them too)."""
        roles = (("weights", self.hub), ("transformer gguf", self.transformer_gguf))
        loras = tuple((f"lora {lo.name}", HubSource(str(lo.repo), lo.revision, (str(lo.file),),
                                                     verified=False))
                      for lo in self.loras if lo.repo is not None)
        return tuple((role, src) for role, src in roles if src is not None) + loras

    def check_gpu(self, cuda: bool, cpu_preset: str = "tiny") -> None:
        """A GPU preset on a machine without CUDA is exit 4, said before any download."""
        if self.min_vram_gib > 0 and not cuda:
            raise ResourceError(
                f"preset {self.name!r} runs on a CUDA GPU (at least {self.min_vram_gib:g} "
                "GiB) and this machine has none",
                f"try the tool on the CPU with --preset {cpu_preset}")

    @property
    def cli_name(self) -> str:
        """How a command names this preset: its name when that finds this very file (as
        `longvid models pull NAME` would), else the path of its file."""
        return self.name if available_presets().get(self.name) == Path(self.source) \
            else self.source

    @property
    def sha256(self) -> str:
        unset = {"quantization": NO_QUANTIZATION, "transformer_gguf": None,  # older run keys
                 "negative_prompt": "", "loras": ()}
        data = {k: v for k, v in self.__dict__.items()
                if k not in ("source", "description", "licence", "non_commercial")
                and not (k in unset and v == unset[k])}
        data["options"] = self.options.model_dump(mode="json", exclude_unset=True)  # as written
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()


class _HubIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = "main"
    files: list[str] = Field(min_length=1)
    verified: bool = False


class _GgufIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = "main"
    file: str = Field(pattern=r"^[^*?\[]+\.gguf$")  # one file, no glob
    quant_type: Literal[tuple(GGUF_BITS_PER_WEIGHT)]  # type: ignore[valid-type]
    verified: bool = False


class _QuantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    text_encoder: Literal[TEXT_ENCODER_QUANTS] = "bf16"  # type: ignore[valid-type]
    transformer: Literal[TRANSFORMER_QUANTS] = "bf16"  # type: ignore[valid-type]


class _MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    text_encoder_gib: float = Field(ge=0)
    text_encoder_act_gib: float = Field(default=0.5, ge=0)
    transformer_gib: float = Field(gt=0)
    transformer_blocks: int = Field(ge=1)
    act_bytes_per_token: int = Field(gt=0)
    vae_gib: float = Field(ge=0)
    vae_decode_gib: float = Field(ge=0)
    text_encoder_unquantized_gib: float = Field(default=0, ge=0)
    text_encoder_blocks: int = Field(default=1, ge=1)
    text_encoder_embedding_gib: float = Field(default=0, ge=0)


class _PresetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    name: str
    description: str = ""
    backend: str
    fps: int = Field(ge=1, le=120)
    resolution: str = Field(pattern=r"^\d+x\d+$")
    steps: int = Field(ge=1, le=200)
    guidance_scale: float = Field(default=1.0, ge=0)
    negative_prompt: str = ""
    min_vram_gib: float = Field(default=0, ge=0)
    options: dict[str, Any] = {}
    hub: _HubIn | None = None
    memory: _MemoryIn | None = None
    quantization: _QuantIn = _QuantIn()
    transformer_gguf: _GgufIn | None = None
    loras: list[LoraIn] = []
    licence: str = ""
    non_commercial: bool = False

    @model_validator(mode="after")
    def _gguf_needs_its_file_and_config(self) -> _PresetIn:
        gguf = self.quantization.transformer == "gguf"
        if gguf != (self.transformer_gguf is not None):
            raise ValueError("`quantization.transformer: gguf` and a `transformer_gguf:` "
                             "section (repo, file, quant_type) go together")
        if gguf and not (self.hub and any(fnmatch.fnmatch("transformer/config.json", pattern)
                                          for pattern in self.hub.files)):
            raise ValueError("a GGUF transformer takes its config from the main snapshot: "
                             "add `transformer/*.json` to `hub.files`")
        if self.quantization != _QuantIn() and self.hub is None:
            raise ValueError("`quantization` applies to weights from the Hub (`hub:`)")
        return self


def preset_dirs() -> list[Path]:
    """Where presets are looked up, first match wins: user, packaged, checkout."""
    dirs = []
    if home := os.environ.get("LONGVID_HOME"):
        dirs.append(Path(home) / "presets")
    package = Path(__file__).resolve().parent
    dirs += [package / "presets", package.parent / "presets"]
    return [d for d in dirs if d.is_dir()]


def available_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(preset_dirs()):  # earlier directories override later ones
        for p in sorted(d.glob("*.yaml")):
            found[p.stem] = p
    return dict(sorted(found.items()))


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (`tiny`) or by path to a YAML file; InputError if unknown or invalid."""
    from longvid.yamlsrc import load_yaml

    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        path = candidate
    else:
        known = available_presets()
        if name_or_path not in known:
            raise InputError(
                f"unknown preset {name_or_path!r}",
                "choose one of: " + ", ".join(known) + " (or pass a path to a preset .yaml)")
        path = known[name_or_path]
    doc = load_yaml(path, what="preset")
    try:
        p = _PresetIn.model_validate(doc.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])[:2] if tuple(err["loc"])[:1] == ("loras",) else err["loc"]
        raise doc.error(tuple(loc), f"invalid preset: {err['msg']}",
                        "see docs/presets.md") from None
    width, height = (int(v) for v in p.resolution.split("x"))
    gguf = p.transformer_gguf
    return Preset(name=p.name, description=p.description, backend=p.backend, fps=p.fps,
                  resolution=(width, height), steps=p.steps, guidance_scale=p.guidance_scale,
                  min_vram_gib=p.min_vram_gib, options=_backend_options(doc, p.backend, p.options),
                  negative_prompt=p.negative_prompt,
                  source=str(path),
                  hub=HubSource(p.hub.repo, p.hub.revision, tuple(p.hub.files), p.hub.verified)
                  if p.hub else None,
                  memory=MemorySpec(**p.memory.model_dump()) if p.memory else None,
                  quantization=Quantization(p.quantization.text_encoder,
                                            p.quantization.transformer,
                                            gguf.quant_type if gguf else None),
                  transformer_gguf=HubSource(gguf.repo, gguf.revision, (gguf.file,),
                                             gguf.verified) if gguf else None,
                  loras=lora_refs(doc, p.loras, path.parent), licence=p.licence,
                  non_commercial=p.non_commercial)


def _backend_options(doc: YamlDoc, backend: str, options: dict[str, Any]) -> BaseModel:
    """`options:` validated against the backend's `Options` model and its window."""
    try:
        cls = backend_class(backend)
    except InputError as exc:
        raise doc.error(("backend",), exc.message, exc.hint) from None
    allowed = list(cls.Options.model_fields)
    try:
        validated = cls.Options.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, allowed, n=1)
            raise doc.error(("options", key), f"unknown option {key!r} for backend {backend!r}",
                            (f"did you mean {close[0]!r}? " if close else "")
                            + "allowed options: " + ", ".join(allowed)
                            + " (`longvid presets show` lists them)") from None
        raise doc.error(("options", *err["loc"]), f"option {key!r}: {err['msg']}",
                        f"see `{key}` in docs/presets.md (backend {backend!r})") from None
    if problem := check_window(cls.caps, validated):
        key, message, hint = problem
        raise doc.error(("options", key), message, hint)
    return validated
