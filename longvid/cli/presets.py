"""`longvid presets list|show`: every preset, and everything one sets, options included.

Human output prints values as a person writes them in YAML (`unset`, `true`,
`a, b`), never as Python reprs; `--json` prints the same facts for scripts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from longvid.cli._ui import guarded

presets_app = typer.Typer(no_args_is_help=True, help="List and show presets.")


@presets_app.command("list")
def presets_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Every preset: built in, from $LONGVID_HOME/presets, and its backend."""

    def body() -> None:
        from longvid.presets import available_presets, load_preset

        rows = [load_preset(n) for n in available_presets()]
        if as_json:
            print(json.dumps([preset_dict(p) for p in rows], indent=2))
            return
        for p in rows:
            verified = all(src.verified for _, src in p.hub_sources)
            flag = "" if verified else "  [unverified repo id]"
            print(f"{p.name:<26} {p.backend:<12} {p.description}{flag}")

    guarded(body, as_json)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or .yaml path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Everything a preset sets, and every option of its backend with value and default."""

    def body() -> None:
        from longvid.presets import load_preset

        p = load_preset(name)
        data = preset_dict(p)
        if as_json:
            print(json.dumps(data, indent=2))
            return
        options = data.pop("options")
        for key, value in data.items():
            print(f"{key:>16}: {'none' if value is None else human(value)}")
        print(f"{'options':>16}: value (default) meaning; * set by this preset")
        width = max(len(o["name"]) for o in options)
        values = [human(o["value"]) + ("*" if o["set"] else "") for o in options]
        shown = max(len(v) for v in values)
        for o, value in zip(options, values, strict=True):
            print(f"  {o['name']:<{width}}  {value:<{shown}}  ({human(o['default'])}) "
                  f"{o['description']}")
        if p.non_commercial:
            print(f"warning: this preset's weights are licensed {p.licence}: "
                  "non-commercial use only")
        for role, src in p.hub_sources:
            if not src.verified:
                print(f"warning: this preset's {role} repo id {src.repo!r} could not be "
                      "verified; check it before use")

    guarded(body, as_json)


def preset_dict(p: Any) -> dict[str, Any]:
    """A preset as plain JSON values; `options` lists every option of its backend;
    `memory_kind` is the memory its caps give it, as `plan` says it (base.MEMORY_KINDS)."""
    from longvid.backends import caps_of

    data = {k: _plain(getattr(p, k)) for k in p.__dataclass_fields__ if k != "options"}
    data["resolution"] = f"{p.resolution[0]}x{p.resolution[1]}"
    data["memory_kind"] = caps_of(p).memory_kind
    data["options"] = option_rows(p.options)
    return data


def option_rows(options: Any) -> list[dict[str, Any]]:
    """name, value, default, set (written in the preset), description of every option."""
    values = options.model_dump(mode="json")
    return [{"name": name, "type": type_name(field.annotation), "value": values[name],
             "default": field.get_default(call_default_factory=True),
             "set": name in options.model_fields_set, "description": field.description or ""}
            for name, field in type(options).model_fields.items()]


def type_name(annotation: Any) -> str:
    """`int | None` -> "integer or unset", `Literal["a", "b"]` -> "a or b"."""
    from typing import Literal, Union, get_args, get_origin

    names = {int: "integer", float: "number", bool: "true or false", str: "text",
             type(None): "unset"}
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(str(a) for a in get_args(annotation))
    if origin is Union or type(annotation).__name__ == "UnionType":
        return " or ".join(type_name(a) for a in get_args(annotation))
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def human(value: Any) -> str:
    """A value as a person writes it: unset, true/false, 2.5, a, b, key=value."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={human(v)}" for k, v in value.items()) or "none"
    return str(value)
