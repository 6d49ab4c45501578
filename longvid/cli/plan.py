"""`longvid plan FILE`: validate a storyboard and show its timeline. Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def plan(
    storyboard: Annotated[Path, typer.Argument(help="Storyboard YAML file.")],
    preset: Annotated[str | None, typer.Option("--preset", "-p",
                                               help="Preset name or .yaml path; overrides "
                                                    "the storyboard's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    vram: Annotated[float, typer.Option(
        "--vram", min=1, help="GPU memory to plan for, in GiB (`render` uses the free VRAM).")
                    ] = 12.0,
) -> None:
    """Validate STORYBOARD and print its shots, segments, prompt switches and work estimate."""

    def body() -> None:
        from longvid.render import load_job
        from longvid.vram import plan_policy

        sb, chosen, p = load_job(storyboard, preset)
        policy = plan_policy(chosen, p, vram)
        # which negative prompt applies: the storyboard's when it sets one, else the preset's
        source = "storyboard" if sb.negative_prompt is not None else "preset"
        if as_json:
            print(json.dumps(p.to_dict() | {"negative_prompt_source": source,
                                            "policy": policy.to_dict() if policy else None},
                             indent=2))
        else:
            from longvid.cli.plan_view import show_plan

            show_plan(p, policy, source)

    guarded(body, as_json)
