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


def _generator(preset):  # noqa: ANN001, ANN202 - a Preset -> CausalCheckpoint | None
    """The upstream pickle generator a causal preset converts at pull, or None."""
    from longvid.backends.causal_wan import preset_checkpoint

    return preset_checkpoint(preset)


@models_app.command("pull")
def pull(
    preset: Annotated[str, typer.Argument(help="Preset name or .yaml path.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files and sizes only.")
                       ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download PRESET's files (only those) into the Hub cache; resumable. Shows
    huggingface_hub's progress bars (files, bytes) on stderr, then lists every file as
    cached or downloaded. A causal preset's upstream .pt generator is converted once to
    safetensors in longvid's cache, so the first render does not."""

    def body() -> None:
        from longvid import hub
        from longvid.backends import causal_weights

        p = _hub_preset(preset)
        sources = [src for _, src in p.hub_sources]  # the snapshot, then a GGUF file
        for src in sources:
            hub.refuse_pickles(src)
        ckpt = _generator(p)
        if ckpt is not None:  # pickles, read only by the weights_only conversion below
            sources.append(causal_weights.generator_source(ckpt))
        cached = [hub.cached_snapshot(src) for src in sources]
        damaged = {(src.repo, name) for src, folder in zip(sources, cached, strict=True)
                   if folder is not None for name, _ in hub.damaged_files(src, folder)}
        if dry_run:
            files = []
            for src, folder in zip(sources, cached, strict=True):
                if folder is not None:
                    files += [_file(src, name, size, "damaged" if (src.repo, name) in damaged
                                    else "cached")
                              for name, size in hub.snapshot_files(src, folder)]
                else:
                    files += [_file(src, f.filename, f.file_size or 0,
                                    "cached" if f.is_cached else "to fetch")
                              for f in hub.remote_files(src)]
            total = sum(f["bytes"] for f in files)
            plan = None if ckpt is None else _conversion_plan(ckpt, cached[-1])
            if as_json:
                print(json.dumps({"preset": p.name, "repo": p.hub.repo, "files": files,
                                  "bytes": total}
                                 | ({} if plan is None else {"conversion": plan})))
                return
            _print_files(files, p.hub.repo)
            print(f"{total / 2**30:.2f} GiB in {len(files)} files from "
                  + " + ".join(f"{s.repo}@{s.revision}" for s in sources))
            if plan is not None:
                print(plan["note"])
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
        # 2. download what is missing, and again what is damaged (huggingface_hub's
        #    progress bars on stderr: files, bytes)
        n = len(p.hub_sources)
        folders = [hub.resolve(src, p.name, download=True) for src in sources[:n]]
        fetch |= damaged
        conversion = None
        if ckpt is not None:  # 2b. the generator's .pt files, then their one conversion
            for name in ckpt.files:
                causal_weights.hub_file(ckpt, name, p.cli_name)
            folder = hub.cached_snapshot(sources[-1])
            assert folder is not None, "hub_file has just fetched every file"
            folders.append(folder)
            conversion = _convert(ckpt, folders[0], p.cli_name)
        # 3. report every file of the preset: already cached, or downloaded now
        rows, files = [], []
        for src, folder, before in zip(sources, folders, cached, strict=True):
            rows.append({"repo": src.repo, "revision": src.revision, "path": str(folder),
                         "already_cached": before is not None
                         and not any(repo == src.repo for repo, _ in damaged)})
            files += [_file(src, name, size, "downloaded" if (src.repo, name) in fetch
                            else "cached") for name, size in hub.snapshot_files(src, folder)]
        if as_json:
            print(json.dumps({"preset": p.name, "repo": p.hub.repo, "path": rows[0]["path"],
                              "already_cached": not missing and not damaged, "sources": rows,
                              "files": files,
                              "bytes": sum(f["bytes"] for f in files)}
                             | ({} if conversion is None else {"conversion": conversion})))
            return
        for r in rows:
            verb = "already in" if r["already_cached"] else "downloaded to"
            print(f"{p.name}: {r['repo']} {verb} {r['path']}")
        _print_files(files, p.hub.repo)
        if conversion is not None:
            print(conversion["note"])

    guarded(body, as_json)


def _conversion_plan(ckpt, folder) -> dict:  # noqa: ANN001 - CausalCheckpoint, Path | None
    """What a pull would convert, for --dry-run (nothing is read or written)."""
    from longvid.backends import causal_weights

    what = " + ".join(ckpt.files)
    if folder is None:
        return {"state": "after download", "files": list(ckpt.files), "folder": None,
                "note": f"then converts {what} once to bf16 safetensors in "
                        f"{causal_weights.converted_root()}"}
    target = causal_weights.conversion_folder(ckpt, [folder / name for name in ckpt.files])
    done = (target / "transformer" / causal_weights.DONE).is_file()
    return {"state": "converted" if done else "to convert", "files": list(ckpt.files),
            "folder": str(target),
            "note": f"conversion of {what}: " + (f"already done in {target}" if done else
                                                 f"to bf16 safetensors in {target}")}


def _convert(ckpt, wan_folder, label: str) -> dict:  # noqa: ANN001 - CausalCheckpoint, Path
    """Convert the generator unless done (torch.load(weights_only=True), once)."""
    from longvid.backends import causal_weights

    folder, converted = causal_weights.convert_once(ckpt, wan_folder, label)
    record = next(c for c in causal_weights.conversions(ckpt) if c.folder == folder)
    state = "converted" if converted else "already converted"
    return {"state": state, "folder": str(folder), "bytes": record.bytes,
            "sources_sha256": record.sources_sha256,
            "note": f"{state}: {folder} ({record.bytes / 2**30:.2f} GiB bf16 safetensors)"}


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
    """Presets with downloadable weights, and whether they are in the Hub cache; for a
    causal preset also its generator download and its converted safetensors."""

    def body() -> None:
        from longvid import hub
        from longvid.backends import causal_weights
        from longvid.presets import available_presets, load_preset

        rows = []
        checked: dict[tuple, list] = {}  # presets share snapshots: each is checked once
        for name in available_presets():
            p = load_preset(name)
            sources = []
            ckpt = _generator(p)
            roles = list(p.hub_sources) + ([] if ckpt is None else [
                ("generator", causal_weights.generator_source(ckpt))])
            for role, src in roles:
                folder = hub.cached_snapshot(src)
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) \
                    if folder else 0
                key = (folder, src.files)
                if folder and key not in checked:
                    checked[key] = hub.damaged_files(src, folder)
                bad = checked.get(key, [])
                sources.append({"role": role, "repo": src.repo, "revision": src.revision,
                                "cached": folder is not None and not bad, "bytes": size,
                                "verified": src.verified,
                                "damaged": [{"file": f, "why": why} for f, why in bad]})
            if sources:
                extra = {} if ckpt is None else {"converted": [
                    {"path": str(c.folder), "bytes": c.bytes, "sources_sha256": c.sources_sha256,
                     "converter": c.converter} for c in causal_weights.conversions(ckpt)]}
                rows.append({"preset": name, "repo": p.hub.repo, "revision": p.hub.revision,
                             "cached": all(s["cached"] for s in sources),
                             "bytes": sum(s["bytes"] for s in sources),
                             "verified": all(s["verified"] for s in sources),
                             "sources": sources} | extra)
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        for r in rows:
            bad = sum(len(s["damaged"]) for s in r["sources"])
            state = (f"cached, {r['bytes'] / 2**30:.2f} GiB" if r["cached"] else
                     f"{bad} damaged file(s): `longvid models pull {r['preset']}` fetches "
                     "them again" if bad else "not downloaded")
            print(f"{r['preset']:<26} {r['repo']}@{r['revision']}  {state}"
                  + ("" if r["verified"] else "  (repo id unverified)"))
            for s in r["sources"][1:]:
                state = ("cached" if s["cached"] else "damaged" if s["damaged"]
                         else "not downloaded")
                print(f"{'':<26} + {s['role']}: {s['repo']}@{s['revision']}  {state}"
                      + ("" if s["verified"] else "  (repo id unverified)"))
            for c in r.get("converted", []):
                shas = ", ".join(f"{name} sha256 {sha[:12]}"
                                 for name, sha in c["sources_sha256"].items())
                print(f"{'':<26} + converted: {c['path']}  {c['bytes'] / 2**30:.2f} GiB  "
                      f"({shas})")

    guarded(body, as_json)


@models_app.command("rm")
def rm(preset: Annotated[str, typer.Argument(help="Preset name or .yaml path.")]) -> None:
    """Remove PRESET's repositories from the Hub cache (other presets may share them), and
    a causal preset's converted generator from longvid's cache."""

    def body() -> None:
        from huggingface_hub import scan_cache_dir

        from longvid import hub
        from longvid.backends import causal_weights

        p = _hub_preset(preset)
        ckpt = _generator(p)
        repo_ids = [src.repo for _, src in p.hub_sources] + ([] if ckpt is None else [ckpt.repo])
        for repo in dict.fromkeys(repo_ids):
            info = scan_cache_dir(hub.hub_cache_dir()) if hub.hub_cache_dir().exists() else None
            repos = [r for r in (info.repos if info else []) if r.repo_id == repo]
            if not repos:
                print(f"{repo} is not in {hub.hub_cache_dir()}: nothing to remove")
                continue
            hashes = [rev.commit_hash for r in repos for rev in r.revisions]
            strategy = info.delete_revisions(*hashes)
            strategy.execute()
            print(f"removed {repo} ({strategy.expected_freed_size / 2**30:.2f} GiB)")
        for c in [] if ckpt is None else causal_weights.remove_conversions(ckpt):
            print(f"removed the conversion {c.folder} ({c.bytes / 2**30:.2f} GiB)")

    guarded(body, False)
