"""The storyboard YAML: pydantic schema at the edge, frozen dataclasses inside.

`load_storyboard(path)` is the only way in. It validates the schema and every rule
that needs no frame rate (ids, recall, files, transitions); frame-level rules
(gaps, overlaps, `at` inside its shot) are checked by `plan.make_plan`, which gets
the line numbers it needs from the dataclasses below. The format is documented in
docs/storyboard.md.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from longvid.camera import CAMERA_MOVES
from longvid.errors import StoryboardError
from longvid.images import ImageFile, checked_image
from longvid.loras import LoraIn, LoraRef, lora_refs
from longvid.timecode import TIME_FORMS, Time, parse_time
from longvid.yamlsrc import YamlDoc, load_yaml, source_folder, source_stem

TRANSITION_KINDS = ("cut", "continue", "crossfade")
DEFAULT_TRANSITION_S = {"continue": 1, "crossfade": "0.5"}
_RESOLUTION = re.compile(r"^(\d+)\s*[xX×]\s*(\d+)$")


# --- frozen data used everywhere downstream ------------------------------------------


@dataclass(frozen=True)
class TimedPrompt:
    at: Time  # relative to the shot's start
    text: str
    line: int


@dataclass(frozen=True)
class Transition:
    kind: str  # "cut" | "continue" | "crossfade"
    length: Time
    line: int


@dataclass(frozen=True)
class Camera:
    move: str
    speed: float


@dataclass(frozen=True)
class Audio:
    path: Path
    offset: Time  # where in the audio file the video's first frame starts


@dataclass(frozen=True)
class Shot:
    id: str
    prompts: tuple[TimedPrompt, ...]
    duration: Time | None
    start: Time | None
    end: Time | None
    transition: Transition
    seed: int | None
    camera: Camera | None
    recall: tuple[str, ...]
    line: int
    key_lines: tuple[tuple[str, int], ...]  # ("duration", 12), ... for error messages
    image: ImageFile | None = None  # the shot's first frame (it starts a take)
    refs: tuple[ImageFile, ...] = ()  # reference images, the storyboard's first
    lora_weights: tuple[tuple[str, float], ...] = ()  # (LoRA name, weight) overrides

    def line_of(self, key: str) -> int:
        return dict(self.key_lines).get(key, self.line)


@dataclass(frozen=True)
class Storyboard:
    path: str
    version: int
    title: str
    preset: str
    fps: int | None  # None: the preset's
    resolution: tuple[int, int] | None  # (width, height); None: the preset's
    seed: int
    negative_prompt: str | None  # None: the preset's default
    style: str
    audio: Audio | None
    output: Path | None
    shots: tuple[Shot, ...]
    anti_drift: bool | None  # correct colour and latent drift; None: the preset's default
    content_sha256: str  # of everything that changes generated frames
    lines: tuple[tuple[str, int], ...]
    loras: tuple[LoraRef, ...] = ()  # added to the preset's

    def line_of(self, key: str) -> int | None:
        return dict(self.lines).get(key)


def one_shot(*, path: str, shot_id: str, title: str, prompt: str, frames: int, fps: int,
             resolution: tuple[int, int], seed: int, content_sha256: str) -> Storyboard:
    """A storyboard of one continuing shot of `frames` frames, built in code rather than
    read from YAML: `extend`'s continuation, and the full-window plan `doctor` sizes."""
    zero = Time(seconds=Fraction(0))
    shot = Shot(id=shot_id, prompts=(TimedPrompt(zero, prompt, 0),),
                duration=Time(frames=frames), start=None, end=None,
                transition=Transition("continue", zero, 0), seed=None, camera=None,
                recall=(), line=0, key_lines=())
    return Storyboard(path=path, version=1, title=title, preset="", fps=fps,
                      resolution=resolution, seed=seed, negative_prompt=None, style="",
                      audio=None, output=None, shots=(shot,), anti_drift=None,
                      content_sha256=content_sha256, lines=())


# --- pydantic schema (edge only) -------------------------------------------------------


def _time(value: Any) -> Time:
    return parse_time(value)


def _number(value: Any) -> Any:
    """`true` is not a number (pydantic would take it as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Number = BeforeValidator(_number)


TimeField = Annotated[Time, BeforeValidator(_time)]


def _mapping_of(key: str) -> BeforeValidator:
    def wrap(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    return BeforeValidator(wrap)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=False)


class _PromptIn(_Model):
    at: TimeField
    text: str = Field(min_length=1)


class _TransitionIn(_Model):
    type: Literal[TRANSITION_KINDS]  # type: ignore[valid-type]
    seconds: TimeField | None = None


class _CameraIn(_Model):
    move: Literal[tuple(CAMERA_MOVES)]  # type: ignore[valid-type]
    speed: Annotated[float, Number] = Field(default=1.0, gt=0, le=10)


class _AudioIn(_Model):
    path: str = Field(min_length=1)
    offset: TimeField = Time(seconds=Fraction(0))


class _ShotIn(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    prompt: str | None = Field(default=None, min_length=1)
    prompts: list[_PromptIn] | None = Field(default=None, min_length=1)
    duration: TimeField | None = None
    start: TimeField | None = None
    end: TimeField | None = None
    transition: Annotated[_TransitionIn | None, _mapping_of("type")] = None
    seed: Annotated[int | None, Number] = Field(default=None, ge=0, lt=2**63)
    camera: Annotated[_CameraIn | None, _mapping_of("move")] = None
    recall: list[str] = []
    image: str | None = Field(default=None, min_length=1)
    refs: list[str] = []
    lora_weights: dict[str, float] = {}


class _StoryboardIn(_Model):
    version: Annotated[Literal[1], Number] = 1
    title: str = ""
    preset: str = "tiny"
    fps: Annotated[int | None, Number] = Field(default=None, ge=1, le=120)
    resolution: str | None = None
    seed: Annotated[int, Number] = Field(default=0, ge=0, lt=2**63)
    negative_prompt: str | None = None  # unset: the preset's
    style: str = ""
    audio: Annotated[_AudioIn | None, _mapping_of("path")] = None
    output: str | None = None
    anti_drift: bool | None = None  # unset: the preset's
    refs: list[str] = []
    loras: list[LoraIn] = []
    shots: list[_ShotIn] = Field(min_length=1)


# --- loading ---------------------------------------------------------------------------


def load_storyboard(path: str | Path) -> Storyboard:
    """Read, validate and freeze a storyboard; raise StoryboardError naming file, line, key."""
    path = Path(path)
    doc = load_yaml(path)
    try:
        model = _StoryboardIn.model_validate(doc.data)
    except ValidationError as exc:
        raise _explain(exc, doc) from None
    return _freeze(model, doc, path)


class _Shown:
    """A user's value in a message: short, one line, whatever its size or nesting."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        import reprlib

        short = reprlib.Repr()
        short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = (
            2, 60, 60, 4, 4)
        return short.repr(self.value)


def _explain(exc: ValidationError, doc: YamlDoc) -> StoryboardError:
    """The first schema error, in words a user can act on (plus a count of the rest)."""
    errors = exc.errors()
    err = errors[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    loc = tuple(p for p in loc if p not in ("_TransitionIn", "_CameraIn", "_AudioIn"))
    kind, given = err["type"], _Shown(err.get("input"))
    lora = loc[:1] == ("loras",)
    loc = loc[:2] if lora and kind == "value_error" else loc  # a LoRA entry's own rule
    key = f"loras[{loc[1]}]" if lora and len(loc) == 2 else str(loc[-1]) if loc else ""
    parent = loc[:-1]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(parent)
        close = difflib.get_close_matches(key, allowed, n=1)
        message = f"unknown key {key!r}"
        hint = (f"did you mean {close[0]!r}? " if close else "") + "allowed here: " + ", ".join(
            allowed)
    elif kind == "missing":
        message = f"missing required key {key!r}"
        hint = _MISSING_HINTS.get(key, f"add `{key}:` here; see docs/storyboard.md")
    elif kind == "value_error":
        message = f"{key}: {err['msg'].removeprefix('Value error, ')}"
        hint = "see `loras` in docs/storyboard.md" if lora else (
            f"times are written {TIME_FORMS}" if "time" in err["msg"] else "")
    elif kind == "literal_error":
        message = f"{key}: {given!r} is not allowed; {err['msg'].lower()}"
        hint = "see docs/storyboard.md for the accepted values"
    elif kind in ("too_short", "string_too_short"):
        message = f"{key} must not be empty"
        hint = "give at least one value, or remove the key"
    elif kind == "string_pattern_mismatch":
        message = f"{key}: {given!r} may only use letters, digits, '_', '-' and '.'"
        hint = "shot ids name files in the run directory; use e.g. `harbour-night`"
    else:
        message = f"{key}: {err['msg'].lower()} (got {given!r})"
        hint = "see docs/storyboard.md for this key's type"
    if len(errors) > 1:
        hint = (hint + "; " if hint else "") + f"{len(errors) - 1} more problem(s) after this one"
    return doc.error(loc, message, hint)


_MISSING_HINTS = {
    "shots": "add a `shots:` list; each shot needs an `id`, a `prompt` and a `duration`",
    "id": "give every shot a unique `id:` such as `intro`",
    "at": "each timed prompt needs `at:` (time from the shot's start) and `text:`",
    "text": "each timed prompt needs `at:` and `text:`",
    "type": "write the transition as `cut`, `continue`, or `{type: crossfade, seconds: 0.5}`",
    "path": "write audio as a path, or `{path: music.wav, offset: 0s}`",
    "move": f"camera is one of {', '.join(CAMERA_MOVES)}",
}


def _allowed_keys(parent: tuple[str | int, ...]) -> list[str]:
    names = [p for p in parent if isinstance(p, str)]
    model: type[BaseModel] = _StoryboardIn
    if names[:1] == ["shots"]:
        model = _ShotIn
        if len(names) > 1:
            nested: dict[str, type[BaseModel]] = {
                "prompts": _PromptIn, "transition": _TransitionIn, "camera": _CameraIn}
            model = nested.get(names[1], _ShotIn)
    elif names[:1] == ["audio"]:
        model = _AudioIn
    elif names[:1] == ["loras"]:
        model = LoraIn
    return list(model.model_fields)


def _freeze(model: _StoryboardIn, doc: YamlDoc, path: Path) -> Storyboard:
    """Check the frame-free rules and convert to frozen dataclasses."""
    base = source_folder(path)
    loras = lora_refs(doc, model.loras, base)
    top_refs = tuple(checked_image(doc, ("refs", j), base / r) for j, r in enumerate(model.refs))
    seen: dict[str, int] = {}
    shots: list[Shot] = []
    for i, s in enumerate(model.shots):
        loc = ("shots", i)
        line = doc.line_of(loc)
        if s.id in seen:
            raise doc.error(loc + ("id",), f"duplicate shot id {s.id!r} (shot {seen[s.id] + 1} "
                            "has it too)", "give every shot its own id")
        seen[s.id] = i
        if (s.prompt is None) == (s.prompts is None):
            both = s.prompt is not None
            raise doc.error(
                loc + (("prompts",) if both else ()),
                f"shot {s.id!r} has {'both `prompt` and `prompts`' if both else 'no prompt'}",
                "use `prompt: ...` for one prompt, or `prompts: [{at: 0s, text: ...}, ...]` "
                "for timed prompts, not both")
        prompts: tuple[TimedPrompt, ...]
        if s.prompt is not None:
            prompts = (TimedPrompt(Time(seconds=Fraction(0)), s.prompt,
                                   doc.line_of(loc + ("prompt",))),)
        else:
            prompts = tuple(TimedPrompt(p.at, p.text, doc.line_of(loc + ("prompts", j)))
                            for j, p in enumerate(s.prompts or []))
        if s.duration is None and s.end is None:
            raise doc.error(loc, f"shot {s.id!r} has no length",
                            "add `duration: 4s` (or absolute `start:` and `end:`)")
        if s.duration is not None and s.end is not None:
            raise doc.error(loc + ("end",), f"shot {s.id!r} has both `duration` and `end`",
                            "keep one: `duration` is relative, `end` absolute")
        for r in s.recall:
            if r not in seen or r == s.id:
                later = any(o.id == r for o in model.shots)
                raise doc.error(
                    loc + ("recall",),
                    f"shot {s.id!r} recalls {r!r}, which is "
                    + ("not an earlier shot" if later else "not a shot id"),
                    "recall may only name shots that come before this one: "
                    + (", ".join(repr(x) for x in seen if x != s.id) or "(none yet)"))
        kind = s.transition.type if s.transition else "continue"
        length = (s.transition.seconds if s.transition and s.transition.seconds is not None
                  else parse_time(DEFAULT_TRANSITION_S.get(kind, 0)))
        if i == 0 and s.transition and kind == "crossfade":
            raise doc.error(loc + ("transition",), "the first shot cannot crossfade: nothing "
                            "comes before it", "remove its `transition`")
        if s.image is not None and i and kind != "cut":  # continues, crossfades
            raise doc.error(loc + ("image",), f"shot {s.id!r} starts from an image but {kind}s "
                            "from the shot before", "a shot that starts from an image starts "
                            "a new take: give it `transition: cut`")
        key_lines = tuple((k, doc.line_of(loc + (k,))) for k in ("duration", "start", "end",
                          "transition", "prompts", "image", "lora_weights"))
        shots.append(Shot(
            id=s.id, prompts=prompts, duration=s.duration, start=s.start, end=s.end,
            transition=Transition(kind, length, doc.line_of(loc + ("transition",))),
            seed=s.seed, camera=Camera(s.camera.move, s.camera.speed) if s.camera else None,
            recall=tuple(s.recall), line=line, key_lines=key_lines,
            image=checked_image(doc, loc + ("image",), base / s.image) if s.image else None,
            refs=top_refs + tuple(checked_image(doc, loc + ("refs", j), base / r)
                                  for j, r in enumerate(s.refs)),
            lora_weights=tuple(s.lora_weights.items())))

    audio = None
    if model.audio is not None:
        audio_path = (base / model.audio.path).resolve()
        if not audio_path.is_file():
            what = "path is a folder" if audio_path.is_dir() else "file not found"
            raise doc.error(("audio", "path") if isinstance(doc.data["audio"], dict)
                            else ("audio",), f"audio {what}: {audio_path}",
                            "audio paths are relative to the storyboard file")
        audio = Audio(audio_path, model.audio.offset)
    resolution = None
    if model.resolution is not None:
        m = _RESOLUTION.match(model.resolution.strip())
        if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
            raise doc.error(("resolution",), f"resolution {model.resolution!r} is not WIDTHxHEIGHT",
                            "write it like `832x480` (width first)")
        resolution = (int(m.group(1)), int(m.group(2)))

    return Storyboard(
        path=str(path), version=model.version, title=model.title or source_stem(path),
        preset=model.preset, fps=model.fps, resolution=resolution, seed=model.seed,
        negative_prompt=model.negative_prompt, style=model.style, audio=audio,
        output=(base / model.output) if model.output else None, shots=tuple(shots),
        anti_drift=model.anti_drift, loras=loras,
        content_sha256=_content_hash(model, shots, loras),
        lines=tuple((k, doc.line_of((k,))) for k in ("fps", "resolution", "preset", "shots",
                                                      "output", "loras")),
    )


def _content_hash(model: _StoryboardIn, shots: list[Shot], loras: tuple[LoraRef, ...]) -> str:
    """Hash of what changes frames (images, LoRA files by content); not audio, output, title."""
    data = model.model_dump(exclude={"audio", "output", "title"})
    # unset values hash as the values they stood for before presets had defaults, so a
    # storyboard keeps its hash; the plan records what they resolve to for a preset
    data["negative_prompt"] = "" if data["negative_prompt"] is None else data["negative_prompt"]
    data["anti_drift"] = True if data["anti_drift"] is None else data["anti_drift"]
    for holder in [data, *data["shots"]]:  # unset, the newer keys leave older hashes alone
        for key in [k for k in ("refs", "loras", "image", "lora_weights") if not holder.get(k, 1)]:
            del holder[key]
    if files := sorted({f.sha256 for s in shots for f in (s.image, *s.refs) if f is not None}
                       | {lora.key for lora in loras}):
        data["files"] = files
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
