"""A Hugging Face Hub on the loopback interface, for the download code: huggingface_hub
itself talks to it (HF_ENDPOINT), over HTTP, as it talks to huggingface.co.

It answers what `snapshot_download` and `hf_hub_download` ask: a repo's revision
(`/api/models/<repo>/revision/<rev>`), its file tree (`/api/models/<repo>/tree/<rev>`),
and each file (`HEAD`/`GET /<repo>/resolve/<rev>/<path>`, with the commit, ETag and
size headers the client reads). Safetensors files are served as LFS files (ETag:
their SHA-256), the others as git blobs (ETag: their git hash), as on the Hub. Each
request is counted, so a test can tell what was fetched."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from huggingface_hub.utils.sha import git_hash

LFS_SUFFIXES = (".safetensors", ".gguf", ".pt", ".pth", ".bin", ".model")


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}  # repo -> (commit, files)
        self.fetched: Counter[str] = Counter()  # "repo/path" -> GET requests served
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo: str, folder: Path) -> None:
        """Serve every file under `folder` as `repo` at revision main."""
        files = {str(p.relative_to(folder)): p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        commit = hashlib.sha1(repo.encode() + b"".join(files.values())).hexdigest()
        self.repos[repo] = (commit, files)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def etag(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_hash(data)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _json(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _missing(self, what: str = "EntryNotFound") -> None:
            """The Hub's 404, with the error code huggingface_hub turns into its own
            error class (RepoNotFound, RevisionNotFound, EntryNotFound)."""
            self.send_response(404)
            self.send_header("X-Error-Code", what)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self, send_body: bool) -> None:
            parts = unquote(urlparse(self.path).path).strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo, kind, revision = "/".join(parts[2:4]), parts[4], parts[5]
                if repo not in hub.repos:
                    return self._missing("RepoNotFound")
                commit, files = hub.repos[repo]
                if revision not in ("main", commit):
                    return self._missing("RevisionNotFound")
                if kind == "revision":
                    return self._json({"id": repo, "sha": commit, "private": False,
                                       "siblings": [{"rfilename": f} for f in files]})
                if kind == "tree":
                    return self._json([
                        {"type": "file", "path": f, "size": len(d), "oid": git_hash(d)}
                        | ({"lfs": {"oid": etag(f, d), "size": len(d),
                                    "pointerSize": 134}} if is_lfs(f) else {})
                        for f, d in files.items()])
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, path = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._missing("RepoNotFound")
                commit, files = hub.repos[repo]
                if parts[3] not in ("main", commit):
                    return self._missing("RevisionNotFound")
                if path not in files:
                    return self._missing()
                data = files[path]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{etag(path, data)}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    hub.fetched[f"{repo}/{path}"] += 1
                    self.wfile.write(data)
                return None
            return self._missing()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self._route(send_body=False)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._route(send_body=True)

    return Handler


def online_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """What a longvid process needs to talk to the Hub at `endpoint`, with its Hub cache and
    LONGVID_HOME under `tmp_path`."""
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint,
            "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "LONGVID_HOME": str(tmp_path / "home"),
            # a proxy set for the machine must not take loopback requests
            "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
