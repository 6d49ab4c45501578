"""`longvid models pull|list|rm` and `longvid presets list|show`: weights and presets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from longvid.cli._ui import guarded
from longvid.errors import InputError

models_app = typer.Typer(no_args_is_help=True, help="Download, list and remove preset weights.")
presets_app = typer.Typer(no_args_is_help=True, help="List and show presets.")


def _hub_preset(name: str):
    from longvid.presets import load_preset

    preset = load_preset(name)
    if preset.hub is None:
        raise InputError(f"preset {preset.name!r} has no weights to download (they are built in)",
                         "only presets with a `hub:` section have weights in the Hub cache")
    return preset


@models_app.command("pull")
def pull(
    preset: Annotated[str, typer.Argument(help="Preset name or .yaml path.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files and sizes only.")
                       ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download PRESET's files (only those) into the Hub cache; resumable."""

    def body() -> None:
        from longvid import hub

        p = _hub_preset(preset)
        hub.refuse_pickles(p.hub)
        cached = hub.cached_snapshot(p.hub)
        if dry_run:
            if cached is not None:
                files = [{"file": str(f.relative_to(cached)), "bytes": f.stat().st_size,
                          "cached": True} for f in sorted(cached.rglob("*")) if f.is_file()]
            else:
                files = [{"file": f.filename, "bytes": f.file_size or 0, "cached": f.is_cached}
                         for f in hub.remote_files(p.hub)]
            total = sum(f["bytes"] for f in files)
            if as_json:
                print(json.dumps({"preset": p.name, "repo": p.hub.repo, "files": files,
                                  "bytes": total}))
                return
            for f in files:
                print(f"{f['bytes'] / 2**20:10.1f} MiB  {'cached ' if f['cached'] else ''}"
                      f"{f['file']}")
            print(f"{total / 2**30:.2f} GiB in {len(files)} files from {p.hub.repo}"
                  f"@{p.hub.revision}")
            return
        folder = cached or hub.resolve(p.hub, p.name, download=True)
        if as_json:
            print(json.dumps({"preset": p.name, "repo": p.hub.repo, "path": str(folder),
                              "already_cached": cached is not None}))
        else:
            print(f"{p.name}: {p.hub.repo} {'already in' if cached else 'downloaded to'} "
                  f"{folder}")

    guarded(body, as_json)


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Presets with downloadable weights, and whether they are in the Hub cache."""

    def body() -> None:
        from longvid import hub
        from longvid.presets import available_presets, load_preset

        rows = []
        for name in available_presets():
            p = load_preset(name)
            if p.hub is None:
                continue
            folder = hub.cached_snapshot(p.hub)
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder \
                else 0
            rows.append({"preset": name, "repo": p.hub.repo, "revision": p.hub.revision,
                         "cached": folder is not None, "bytes": size,
                         "verified": p.hub.verified})
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        for r in rows:
            state = f"cached, {r['bytes'] / 2**30:.2f} GiB" if r["cached"] else "not downloaded"
            print(f"{r['preset']:<22} {r['repo']}@{r['revision']}  {state}"
                  + ("" if r["verified"] else "  (repo id unverified)"))

    guarded(body, as_json)


@models_app.command("rm")
def rm(preset: Annotated[str, typer.Argument(help="Preset name or .yaml path.")]) -> None:
    """Remove PRESET's repository from the Hub cache."""

    def body() -> None:
        from huggingface_hub import scan_cache_dir

        from longvid import hub

        p = _hub_preset(preset)
        info = scan_cache_dir(hub.hub_cache_dir()) if hub.hub_cache_dir().exists() else None
        repos = [r for r in (info.repos if info else []) if r.repo_id == p.hub.repo]
        if not repos:
            print(f"{p.hub.repo} is not in {hub.hub_cache_dir()}: nothing to remove")
            return
        hashes = [rev.commit_hash for r in repos for rev in r.revisions]
        strategy = info.delete_revisions(*hashes)
        strategy.execute()
        print(f"removed {p.hub.repo} ({strategy.expected_freed_size / 2**30:.2f} GiB)")

    guarded(body, False)


@presets_app.command("list")
def presets_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Every preset: built in, from $LONGVID_HOME/presets, and its backend."""

    def body() -> None:
        from longvid.presets import available_presets, load_preset

        rows = [load_preset(n) for n in available_presets()]
        if as_json:
            print(json.dumps([_preset_dict(p) for p in rows], indent=2))
            return
        for p in rows:
            flag = "" if p.hub is None or p.hub.verified else "  [unverified repo id]"
            print(f"{p.name:<22} {p.backend:<12} {p.description}{flag}")

    guarded(body, as_json)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or .yaml path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Everything a preset sets."""

    def body() -> None:
        from longvid.presets import load_preset

        data = _preset_dict(load_preset(name))
        if as_json:
            print(json.dumps(data, indent=2))
            return
        for key, value in data.items():
            print(f"{key:>14}: {value}")
        if data["hub"] and not data["hub"]["verified"]:
            print("warning: this preset's repo id could not be verified; check it before use")

    guarded(body, as_json)


def _preset_dict(p) -> dict:
    from dataclasses import asdict

    data = asdict(p)
    data["resolution"] = f"{p.resolution[0]}x{p.resolution[1]}"
    return data
