"""A loopback HTTP server for the weights tests: a plain mirror (with Range), and the
few hub routes `huggingface_hub` uses to download a file."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.corrupt: set[str] = set()  # paths served with one byte flipped
        self.cut_once: set[str] = set()  # paths whose next GET stops half way
        self.hub_repos: dict[str, Path] = {}  # repo id -> folder, for the hub routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                server.handle(self, head=True)

            def do_GET(self) -> None:
                server.handle(self, head=False)

            def do_POST(self) -> None:
                server.handle_paths_info(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def file_gets(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and not p.endswith("manifest.json")]

    def _resolve(self, url_path: str) -> tuple[Path | None, str]:
        rel = urllib.parse.unquote(url_path.lstrip("/"))
        for repo, folder in self.hub_repos.items():
            prefix = f"{repo}/resolve/"
            if rel.startswith(prefix):
                inner = rel[len(prefix) :].split("/", 1)[1]  # drop the revision
                return folder / inner, inner
        return self.root / rel, rel

    def handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        rng = h.headers.get("Range")
        self.requests.append(("HEAD" if head else "GET", h.path, rng))
        path, rel = self._resolve(h.path.split("?")[0])
        if path is None or not path.is_file():
            h.send_error(404)
            return
        data = path.read_bytes()
        if rel in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", COMMIT)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        body = data[start:]
        if rel in self.cut_once:
            self.cut_once.discard(rel)
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)

    def handle_paths_info(self, h: BaseHTTPRequestHandler) -> None:
        # /api/models/{repo}/paths-info/{revision}
        parts = urllib.parse.unquote(h.path).strip("/").split("/")
        repo = "/".join(parts[2:-2])
        body = h.rfile.read(int(h.headers.get("Content-Length", 0))).decode()
        wanted = urllib.parse.parse_qs(body).get("paths", [])
        self.requests.append(("POST", h.path, None))
        out = []
        for p in wanted:
            f = self.hub_repos[repo] / p
            if f.is_file():
                data = f.read_bytes()
                blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()  # git's blob id
                item = {"type": "file", "path": p, "size": len(data), "oid": blob}
                if p.endswith(".safetensors"):
                    item["lfs"] = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                out.append(item)
        payload = json.dumps(out).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
