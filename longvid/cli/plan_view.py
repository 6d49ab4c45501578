"""Rich tables for `longvid plan`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from longvid.budget import LoadPolicy
from longvid.plan import Plan
from longvid.terminal import for_rich
from longvid.timecode import timecode


def show_plan(p: Plan, policy: LoadPolicy | None = None) -> None:
    console = Console()
    tc = lambda f: timecode(max(f, 0), p.fps)  # noqa: E731
    console.print(f"[bold]{for_rich(p.title)}[/]  {p.width}x{p.height} @ {p.fps} fps, "
                  f"{p.total_frames} frames ({p.duration_s:.2f}s), preset {for_rich(p.preset)} "
                  f"(backend {p.backend})")
    shots = Table("shot", "start", "end", "frames", "take", "transition", "recall",
                  title="Shots", title_justify="left")
    for s in p.shots:
        trans = s.transition + (f" {s.transition_frames}f" if s.transition_frames else "")
        shots.add_row(for_rich(s.id), tc(s.start_frame), tc(s.end_frame),
                      str(s.end_frame - s.start_frame), str(s.take), trans,
                      for_rich(", ".join(s.recall)))
    console.print(shots)
    segs = Table("seg", "take", "shot", "start", "frames", "latents", "context", "remembers",
                 "prompt mix", "seed", title="Segments", title_justify="left")
    for g in p.segments:
        note = f" (+{g.hold_frames} held)" if g.hold_frames else ""
        note += f" ({g.blend_frames} dissolved)" if g.blend_frames else ""
        mix = f"{g.blend_weight:.0%} of the other" if g.blend_prompt else ""
        segs.add_row(str(g.index), str(g.take), for_rich(g.shot_id), tc(g.start_frame),
                     f"{g.emit_frames}{note}", str(g.num_latents), str(g.context_latents),
                     for_rich(_remembers(g, p)), mix, str(g.seed))
    console.print(segs)
    sw = Table("shot", "asked at", "takes effect", "moved", "prompt",
               title="Prompt switches", title_justify="left")
    for s in p.switches:
        moved = "dropped: a later prompt snaps to the same frame" if s.dropped else (
            f"{s.frame - s.requested_frame:+d}f" if s.frame != s.requested_frame else "exact")
        sw.add_row(for_rich(s.shot_id), tc(s.requested_frame), tc(s.frame), moved,
                   for_rich(s.text[:48]))
    console.print(sw)
    for warning in p.warnings:
        console.print(f"[yellow]warning:[/] {for_rich(warning)}")
    if p.memory_latents:
        console.print(f"memory: up to {p.memory_latents} recalled keyframe latent(s) per segment;"
                      " `recall` is known now, the anchor and retrieved keyframes at render time"
                      + ("; anti-drift on" if p.anti_drift else "; anti-drift off"))
    cfg = " x 2 (guidance)" if p.guidance_scale > 1 else ""
    units = p.forwards // (p.steps * (2 if cfg else 1))  # a forward per segment or per frame
    unit = "segments" if units == len(p.segments) else "latent frames (one per forward)"
    console.print(f"work: {units} {unit} x {p.steps} steps{cfg} = {p.forwards} "
                  f"transformer forwards of at most {p.max_tokens} tokens")
    if policy is not None:
        verdict = "fits" if policy.fits else "DOES NOT FIT"
        console.print(f"GPU policy for {policy.vram_gib:g} GiB ({verdict}, peak "
                      f"{policy.peak_gib:.1f} GiB): " + "; ".join(
                          f"{s.name} ({s.storage}, {s.weights_gib:.1f} GiB) on {s.placement}"
                          + (f" ~{s.peak_gib:.1f} GiB" if s.placement != "cpu" else "")
                          for s in policy.stages)
                      + ("; VAE tiled" if policy.vae_tiling else ""))


def _remembers(g, p: Plan) -> str:  # noqa: ANN001 - a plan.Segment
    if not p.memory_latents:
        return "(no memory)" if g.recall else ""
    return ", ".join(g.recall[:p.memory_latents])
