"""`longvid models pull|list|rm`: the weights of Hub presets."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from longvid.cli._ui import guarded
from longvid.errors import InputError

models_app = typer.Typer(no_args_is_help=True, help="Download, list and remove preset weights.")


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
    """Download PRESET's files (only those) into the Hub cache; resumable. Shows
    huggingface_hub's progress bars (files, bytes) on stderr, then lists every file as
    cached or downloaded."""

    def body() -> None:
        from longvid import hub

        p = _hub_preset(preset)
        sources = [src for _, src in p.hub_sources]  # the snapshot, then a GGUF file
        for src in sources:
            hub.refuse_pickles(src)
        cached = [hub.cached_snapshot(src) for src in sources]
        if dry_run:
            files = []
            for src, folder in zip(sources, cached, strict=True):
                if folder is not None:
                    files += [_file(src, name, size, "cached")
                              for name, size in hub.snapshot_files(src, folder)]
                else:
                    files += [_file(src, f.filename, f.file_size or 0,
                                    "cached" if f.is_cached else "to fetch")
                              for f in hub.remote_files(src)]
            total = sum(f["bytes"] for f in files)
            if as_json:
                print(json.dumps({"preset": p.name, "repo": p.hub.repo, "files": files,
                                  "bytes": total}))
                return
            _print_files(files, p.hub.repo)
            print(f"{total / 2**30:.2f} GiB in {len(files)} files from "
                  + " + ".join(f"{s.repo}@{s.revision}" for s in sources))
            return
        # 1. what is missing, file by file (asked of the Hub), and room for it on disk
        missing = [src for src, folder in zip(sources, cached, strict=True) if folder is None]
        fetch: set[tuple[str, str]] = set()
        if missing and not hub.is_offline():
            listings = hub.check_disk_space(missing)  # all sources together, before any
            for src, listing in zip(missing, listings, strict=True):
                todo = [f for f in listing if f.will_download]
                fetch |= {(src.repo, f.filename) for f in todo}
                if not as_json:
                    print(f"{src.repo}: fetching {len(todo)} of {len(listing)} files, "
                          f"{sum(f.file_size or 0 for f in todo) / 2**30:.2f} GiB",
                          file=sys.stderr)
        # 2. download (huggingface_hub's progress bars on stderr: files, bytes)
        folders = [folder or hub.resolve(src, p.name, download=True)
                   for src, folder in zip(sources, cached, strict=True)]
        # 3. report every file of the preset: already cached, or downloaded now
        rows, files = [], []
        for src, folder, before in zip(sources, folders, cached, strict=True):
            rows.append({"repo": src.repo, "revision": src.revision, "path": str(folder),
                         "already_cached": before is not None})
            files += [_file(src, name, size, "downloaded" if (src.repo, name) in fetch
                            else "cached") for name, size in hub.snapshot_files(src, folder)]
        if as_json:
            print(json.dumps({"preset": p.name, "repo": p.hub.repo, "path": rows[0]["path"],
                              "already_cached": not missing, "sources": rows, "files": files,
                              "bytes": sum(f["bytes"] for f in files)}))
            return
        for r in rows:
            verb = "already in" if r["already_cached"] else "downloaded to"
            print(f"{p.name}: {r['repo']} {verb} {r['path']}")
        _print_files(files, p.hub.repo)

    guarded(body, as_json)


def _file(src, name: str, size: int, state: str) -> dict:
    return {"repo": src.repo, "file": name, "bytes": size, "state": state,
            "cached": state == "cached"}


def _print_files(files: list[dict], main_repo: str) -> None:
    for f in files:
        where = "" if f["repo"] == main_repo else f"{f['repo']}: "
        print(f"{f['bytes'] / 2**20:10.1f} MiB  {f['state']:<10}  {where}{f['file']}")


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
            sources = []
            for role, src in p.hub_sources:
                folder = hub.cached_snapshot(src)
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) \
                    if folder else 0
                sources.append({"role": role, "repo": src.repo, "revision": src.revision,
                                "cached": folder is not None, "bytes": size,
                                "verified": src.verified})
            if sources:
                rows.append({"preset": name, "repo": p.hub.repo, "revision": p.hub.revision,
                             "cached": all(s["cached"] for s in sources),
                             "bytes": sum(s["bytes"] for s in sources),
                             "verified": all(s["verified"] for s in sources),
                             "sources": sources})
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        for r in rows:
            state = f"cached, {r['bytes'] / 2**30:.2f} GiB" if r["cached"] else "not downloaded"
            print(f"{r['preset']:<26} {r['repo']}@{r['revision']}  {state}"
                  + ("" if r["verified"] else "  (repo id unverified)"))
            for s in r["sources"][1:]:
                state = "cached" if s["cached"] else "not downloaded"
                print(f"{'':<26} + {s['role']}: {s['repo']}@{s['revision']}  {state}"
                      + ("" if s["verified"] else "  (repo id unverified)"))

    guarded(body, as_json)


@models_app.command("rm")
def rm(preset: Annotated[str, typer.Argument(help="Preset name or .yaml path.")]) -> None:
    """Remove PRESET's repositories from the Hub cache (other presets may share them)."""

    def body() -> None:
        from huggingface_hub import scan_cache_dir

        from longvid import hub

        p = _hub_preset(preset)
        for repo in dict.fromkeys(src.repo for _, src in p.hub_sources):
            info = scan_cache_dir(hub.hub_cache_dir()) if hub.hub_cache_dir().exists() else None
            repos = [r for r in (info.repos if info else []) if r.repo_id == repo]
            if not repos:
                print(f"{repo} is not in {hub.hub_cache_dir()}: nothing to remove")
                continue
            hashes = [rev.commit_hash for r in repos for rev in r.revisions]
            strategy = info.delete_revisions(*hashes)
            strategy.execute()
            print(f"removed {repo} ({strategy.expected_freed_size / 2**30:.2f} GiB)")

    guarded(body, False)
