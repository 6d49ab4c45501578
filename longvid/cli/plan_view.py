"""Rich tables for `longvid plan`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich import box
from rich.table import Table

from longvid.budget import LoadPolicy
from longvid.plan import Plan
from longvid.render import RunReuse
from longvid.terminal import console as make_console
from longvid.terminal import for_rich
from longvid.timecode import timecode

T = TypeVar("T")
NEGATIVE_SHOWN_CHARS = 60
SHOWN_ROWS = 200  # a longer table shows its first and last 100 rows (`--json`: all)


def rows(table: Table, items: Sequence[T], what: str) -> Iterator[T]:
    """The items `table` shows, in order: all of them up to SHOWN_ROWS, else the first
    and last SHOWN_ROWS // 2 with a "..." row between them (added to the table when the
    caller has added the first half) and a caption that says how many are left out. A
    terminal gains nothing from 13,000 rows, and rich renders each one slowly."""
    if len(items) <= SHOWN_ROWS:
        yield from items
        return
    half = SHOWN_ROWS // 2
    yield from items[:half]
    table.add_row("...", *[""] * (len(table.columns) - 1))
    note = (f"{len(items) - 2 * half:,} {what} not shown (the first and last {half} are); "
            "`plan --json` lists them all")
    table.caption = f"{table.caption}\n{note}" if table.caption else note
    table.caption_justify = "left"
    yield from items[-half:]


def show_plan(p: Plan, policy: LoadPolicy | None = None, negative_source: str = "",
              reuse: RunReuse | None = None) -> None:
    console = make_console()
    tc = lambda f: timecode(max(f, 0), p.fps)  # noqa: E731
    console.print(f"[bold]{for_rich(p.title)}[/]  {p.width}x{p.height} @ {p.fps} fps, "
                  f"{p.total_frames} frames ({p.duration_s:.2f}s), preset {for_rich(p.preset)} "
                  f"(backend {p.backend})")
    shots = Table("shot", "start", "end", "frames", "take", "transition", "recall",
                  title="Shots", title_justify="left")
    for s in rows(shots, p.shots, "shots"):
        trans = s.transition + (f" {s.transition_frames}f" if s.transition_frames else "")
        shots.add_row(for_rich(s.id), tc(s.start_frame), tc(s.end_frame),
                      str(s.end_frame - s.start_frame), str(s.take), trans,
                      for_rich(", ".join(s.recall)))
    console.print(shots)
    console.print(_segments_table(p, console.width, reuse))
    if reuse is not None:
        console.print(for_rich(_reuse_line(p, reuse)))
    sw = Table("shot", "asked at", "takes effect", "moved", "prompt",
               title="Prompt switches", title_justify="left")
    for s in rows(sw, p.switches, "prompt switches"):
        moved = "dropped: a later prompt snaps to the same frame" if s.dropped else (
            f"{s.frame - s.requested_frame:+d}f" if s.frame != s.requested_frame else "exact")
        sw.add_row(for_rich(s.shot_id), tc(s.requested_frame), tc(s.frame), moved,
                   for_rich(s.text[:48]))
    console.print(sw)
    for line in _inputs(p):
        console.print(for_rich(line))
    for warning in p.warnings:
        console.print(f"[yellow]warning:[/] {for_rich(warning)}")
    console.print(f"memory: {_memory_kind(p)}")
    if p.memory_latents:
        console.print(f"memory: up to {p.memory_latents} recalled keyframe(s) per segment;"
                      " `recall` is known now, the anchor and retrieved keyframes at render time"
                      + ("; anti-drift on" if p.anti_drift else "; anti-drift off"))
    if p.guidance_scale > 1:  # the negative prompt steers only under guidance
        text = p.negative_prompt if len(p.negative_prompt) <= NEGATIVE_SHOWN_CHARS else \
            p.negative_prompt[:NEGATIVE_SHOWN_CHARS] + "..."
        console.print(f"negative prompt (from the {negative_source}): {text or '(empty)'}")
    console.print(f"work: {_work(p)} = {p.forwards} transformer forwards of at most "
                  f"{p.max_tokens} tokens")
    if policy is not None:
        verdict = "fits" if policy.fits else "DOES NOT FIT"
        kv = policy.kv_cache
        console.print(f"GPU policy for {policy.vram_gib:g} GiB ({verdict}, peak "
                      f"{policy.peak_gib:.1f} GiB): " + "; ".join(
                          f"{s.name} ({s.storage}, {s.weights_gib:.1f} GiB) on {s.placement}"
                          f" ~{s.peak_gib:.1f} GiB"
                          for s in policy.stages)
                      + ("" if policy.second is None else
                         f"; {policy.second.name} ({policy.second.storage}, "
                         f"{policy.second.weights_gib:.1f} GiB) on {policy.second.placement}"
                         f" ~{policy.second.peak_gib:.1f} GiB in the transformer stage")
                      + ("; VAE streamed a latent frame at a time" if kv is not None
                         and kv.decoder_gib else "; VAE tiled") + ("" if kv is None else
                                         f"; KV cache ({kv.storage}, {kv.latents} latent "
                                         f"frames, {kv.gib:.2f} GiB)"
                                         + (f" and decoder cache ({kv.decoder_gib:.2f} GiB)"
                                            if kv.decoder_gib else "")
                                         + f", with {kv.churn_gib:.2f} GiB of allocator churn,"
                                         " in the transformer and vae stages"))
        if (host_gib := policy.host_weights_gib) > 0:
            console.print(f"host RAM: at least {host_gib:.1f} GiB for the streamed weights, "
                          "held for the whole render")


def _work(p: Plan) -> str:
    """How the forwards add up: per segment, per frame, or per streamed block."""
    if p.stream is not None:
        s = p.stream
        return (f"{s.blocks} blocks of {s.block_latents} latent frames x ({p.steps} steps + 1 "
                f"clean pass) + {s.replay_forwards} replay forwards (each segment rebuilds "
                "its KV cache from the take's sink and its context)")
    cfg = " x 2 (guidance)" if p.guidance_scale > 1 else ""
    units = p.forwards // (p.steps * (2 if cfg else 1))  # a forward per segment or per frame
    unit = "segments" if units == len(p.segments) else "latent frames (one per forward)"
    return f"{units} {unit} x {p.steps} steps{cfg}"


def _reuse_line(p: Plan, reuse: RunReuse) -> str:
    if not reuse.resumable:
        return (f"run {reuse.run_dir} was made with another preset, size, fps or CRF: "
                "rendering needs --fresh and renders every segment")
    rerolls = "".join(f", shot {s} rerolled {n}x" for s, n in reuse.rerolls.items())
    return (f"run {reuse.run_dir}: {sum(reuse.reused)} of {len(p.segments)} segments reused, "
            f"the others rendered{rerolls}")


def _segments_table(p: Plan, width: int, reuse: RunReuse | None = None) -> Table:
    """One row per segment, readable at 80 columns: light borders, cells that never wrap,
    seeds (19 digits) shortened to fit when the terminal is narrow (`--json` has them).
    Against an existing run, a last column says which segments it reuses."""
    tc = lambda f: timecode(max(f, 0), p.fps)  # noqa: E731
    narrow = width < 120
    segs = Table(title="Segments" + (" (seeds shortened; --json has them in full)"
                                     if narrow else ""), title_justify="left",
                 box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("seg", "take", "shot", "start", "frames", "ctx+new", "recalls", "mix"):
        segs.add_column(name, no_wrap=True, overflow="ellipsis")
    segs.add_column("seed", no_wrap=True, overflow="ellipsis", max_width=8 if narrow else None)
    if reuse is not None and reuse.resumable:
        segs.add_column("run", no_wrap=True)
    for g in rows(segs, p.segments, "segments"):
        note = f" +{g.hold_frames} held" if g.hold_frames else ""
        note += f" {g.blend_frames} faded" if g.blend_frames else ""
        mix = f"{g.blend_weight:.0%}" if g.blend_prompt else ""
        segs.add_row(str(g.index), str(g.take), for_rich(g.shot_id), tc(g.start_frame),
                     f"{g.emit_frames}{note}", f"{g.context_latents}+{g.num_latents}",
                     for_rich(_remembers(g, p)), mix, str(g.seed),
                     *(() if reuse is None or not reuse.resumable else
                       ("reused" if reuse.reused[g.index] else "render",)))
    if any(g.blend_prompt for g in p.segments):
        mix = "mix: share of the neighbouring prompt's embeddings in a `continue`"
        segs.caption = f"{segs.caption}\n{mix}" if segs.caption else mix
        segs.caption_justify = "left"
    return segs


def _inputs(p: Plan) -> list[str]:
    """One line per storyboard image and LoRA a segment takes."""
    from pathlib import Path

    lines = [f"image: segment {g.index} (shot {g.shot_id}) starts from "
             f"{Path(g.image.path).name} ({g.image.width}x{g.image.height} px, scaled, "
             "cropped)" for g in p.segments if g.image is not None]
    refs: dict[str, tuple[str, ...]] = {}
    for g in p.segments:
        if g.refs:
            refs.setdefault(g.shot_id, tuple(Path(r.path).name for r in g.refs))
    lines += [f"refs: shot {shot}: {', '.join(names)}" for shot, names in refs.items()]
    for i, lora in enumerate(p.loras):
        other: dict[str, float] = {}
        for g in p.segments:
            if g.lora_weights[i] != lora.weight:
                other.setdefault(g.shot_id, g.lora_weights[i])
        lines.append(f"LoRA {lora.name}: weight {lora.weight:g}" + "".join(
            f", shot {shot} {w:g}" for shot, w in other.items()))
    return lines


def _memory_kind(p: Plan) -> str:
    """The plan's memory kind in words (docs/memory.md has the per-preset detail)."""
    return {"trained": "trained (the model was trained to use recalled keyframes)",
            "untrained": "untrained (on; a test model with random weights)",
            "opt-in untrained": "opt-in untrained (" + (
                "on by the preset's `memory_latents`; never trained or measured)"
                if p.memory_latents else "off; `memory_latents` in the preset's options turns "
                "on a keyframe injection never trained or measured)"),
            "none": "none"}[p.memory]


def _remembers(g, p: Plan) -> str:  # noqa: ANN001 - a plan.Segment
    if not p.memory_latents:
        return "(no memory)" if g.recall else ""
    return ", ".join(g.recall[:p.memory_latents])
