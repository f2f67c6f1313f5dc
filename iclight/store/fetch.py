"""Fetching, locking and verifying a weights folder.

Sources: the Hugging Face Hub through `huggingface_hub` (HF_ENDPOINT, HF_TOKEN and
its cache behave as usual), or a plain HTTP(S) mirror serving the same layout plus a
`manifest.json`. Every file lands under a temporary name and is renamed into place
only after its size and sha256 check out; partial downloads resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..core import config
from . import layout

log = logging.getLogger("iclight")

MANIFEST_NAME = "manifest.json"
HASH_CACHE = ".hashes.json"
LOCK_NAME = ".fetch.lock"
PART = ".part"
CHUNK = 1 << 20
_SKIP = {MANIFEST_NAME, HASH_CACHE, LOCK_NAME}


class FetchError(RuntimeError):
    """A file could not be fetched or failed verification; the message names it."""


class SourceError(FetchError):
    """The source of the weights could not be reached, or refused them: one message that says
    what was being fetched, from where, the underlying error, and the ways out."""

    def __init__(self, what: str, source: str, error: BaseException) -> None:
        lines = str(error).strip().splitlines() or [""]
        cause = f"{type(error).__name__}: {lines[0][:300]}".rstrip(": ")
        super().__init__(
            f"cannot fetch {what}\n"
            f"  from: {source}\n"
            f"  because: {cause}\n"
            "ways out:\n"
            f"  - a mirror of the weights folder: set {config.WEIGHTS_URL.name}=https://... (or fetch --from URL)\n"
            "  - another Hugging Face endpoint: HF_ENDPOINT=https://...; a gated or private file: HF_TOKEN=...\n"
            "  - fetch on a machine that reaches the source (python -m iclight weights fetch --dest DIR), "
            f"copy DIR here and set {config.WEIGHTS_DIR.name}=DIR"
        )


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the weights folder
    size: int
    sha256: str


def git_blob_sha1(path: Path) -> str:
    """The id git (and the hub, for files not in LFS) gives a file's content."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    h.update(path.read_bytes())
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """sha256 of files under a folder, remembered by (size, mtime) so boots don't rehash gigabytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / HASH_CACHE
        try:
            self._data: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._data = {}
        self._lock = threading.Lock()

    def sha256(self, rel: str) -> str:
        st = (self.root / rel).stat()
        known = self._data.get(rel)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        return self.record(rel, sha256_of(self.root / rel))

    def record(self, rel: str, digest: str) -> str:
        """Remember a digest just computed elsewhere (a verified download)."""
        st = (self.root / rel).stat()
        with self._lock:
            self._data[rel] = [st.st_size, st.st_mtime_ns, digest]
            self._save()
        return digest

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + PART)
        try:
            tmp.write_text(json.dumps(self._data, indent=0, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:  # a read-only weights folder still works, it just rehashes
            pass


def is_valid(root: Path, entry: Entry, hashes: HashCache) -> bool:
    target = root / entry.path
    return target.is_file() and target.stat().st_size == entry.size and hashes.sha256(entry.path) == entry.sha256


# -- lock and verify ---------------------------------------------------------------------------


def _walk(root: Path) -> Iterable[str]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in _SKIP and not rel.endswith(PART) and "/.cache/" not in f"/{rel}":
            yield rel


def lock(root: Path) -> list[Entry]:
    """Write `root/manifest.json` listing every file with its size and sha256."""
    hashes = HashCache(root)
    entries = [Entry(rel, (root / rel).stat().st_size, hashes.sha256(rel)) for rel in _walk(root)]
    write_manifest(root, entries)
    return entries


def write_manifest(root: Path, entries: list[Entry]) -> None:
    tmp = root / (MANIFEST_NAME + PART)
    tmp.write_text(json.dumps({"files": [asdict(e) for e in entries]}, indent=1))
    os.replace(tmp, root / MANIFEST_NAME)


def read_manifest(text: str, where: str) -> list[Entry]:
    try:
        return [Entry(f["path"], int(f["size"]), str(f["sha256"]).lower()) for f in json.loads(text)["files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise FetchError(f"{where}: not a valid manifest ({e})") from e


def verify(root: Path) -> list[str]:
    """Problems with `root` against its manifest.json, one line each (empty: all good)."""
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return [f"{manifest}: missing (write one with: python -m iclight.weights lock {root})"]
    hashes, problems = HashCache(root), []
    for e in read_manifest(manifest.read_text(), str(manifest)):
        target = root / e.path
        if not target.is_file():
            problems.append(f"{e.path}: missing")
        elif target.stat().st_size != e.size:
            problems.append(f"{e.path}: size {target.stat().st_size}, expected {e.size}")
        elif hashes.sha256(e.path) != e.sha256:
            problems.append(f"{e.path}: sha256 differs from the manifest")
    return problems


# -- mirror ------------------------------------------------------------------------------------


def _open(url: str, start: int = 0) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=60)


def _download(url: str, entry: Entry, root: Path, bar: tqdm, hashes: HashCache) -> None:
    """Resume `entry` into `<name>.part`, verify it, then rename it into place."""
    target = root / entry.path
    part = target.with_name(target.name + PART)
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > entry.size:
        part.unlink()
        have = 0
    if have < entry.size:
        try:
            with _open(url, have) as response:
                if have and response.status != 206:  # the server ignored Range: start again
                    have = 0
                bar.update(have)
                with open(part, "ab" if have else "wb") as out:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            raise SourceError(f"{entry.path} (what arrived is kept: fetch again resumes)", url, e) from e
    else:
        bar.update(have)
    _accept(part, target, entry, hashes)


def _accept(part: Path, target: Path, entry: Entry, hashes: HashCache) -> None:
    size = part.stat().st_size
    if size != entry.size:
        raise FetchError(f"{entry.path}: got {size} bytes, expected {entry.size}; run fetch again to resume")
    digest = sha256_of(part)
    if digest != entry.sha256:
        part.unlink()
        raise FetchError(f"{entry.path}: sha256 {digest} does not match the expected {entry.sha256}")
    os.replace(part, target)
    hashes.record(entry.path, digest)


def fetch_mirror(base_url: str, root: Path, workers: int = 4, skip: Iterable[str] = ()) -> list[str]:
    """Fetch every file a mirror's manifest lists but `skip`'s (and the prepared UNets of the models
    whose offsets it skips); return the paths actually downloaded."""
    base = base_url.rstrip("/")
    try:
        with _open(f"{base}/{MANIFEST_NAME}") as response:
            entries = read_manifest(response.read().decode(), f"{base}/{MANIFEST_NAME}")
    except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
        raise SourceError(f"the weights' manifest for {root}", f"the mirror {base}/{MANIFEST_NAME}", e) from e
    skipped = set(skip)
    unserved = {layout.model_of_file(path) for path in skipped} - {None}
    entries = [e for e in entries if e.path not in skipped and layout.model_of_file(e.path) not in unserved]
    root.mkdir(parents=True, exist_ok=True)
    hashes = HashCache(root)
    todo = [e for e in entries if not is_valid(root, e, hashes)]
    if todo:
        with tqdm(total=sum(e.size for e in todo), unit="B", unit_scale=True, desc="weights") as bar:
            run_parallel(todo, lambda e: _download(f"{base}/{e.path}", e, root, bar, hashes), workers)
    write_manifest(root, entries)
    return [e.path for e in todo]


def run_parallel(items: list, job: Callable[[object], None], workers: int) -> None:
    """Run `job` on every item; after all had their chance, raise one error naming each failure."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(job, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    unreachable = [e for e in errors if isinstance(e, SourceError)]
    if unreachable:  # the source is the problem, not each file: say so once
        raise unreachable[0]
    if errors:
        raise FetchError("; ".join(map(str, errors)))


# -- Hugging Face Hub --------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    source: layout.WeightFile
    entry: Entry  # sha256 is the LFS oid; empty for small files kept in git
    blob_id: str  # git blob sha1, the hub's check for files not in LFS

    def present(self, root: Path, hashes: HashCache) -> bool:
        if self.entry.sha256:
            return is_valid(root, self.entry, hashes)
        target = root / self.entry.path
        return target.is_file() and target.stat().st_size == self.entry.size and git_blob_sha1(target) == self.blob_id


def hub_files(files: Iterable[layout.WeightFile] = layout.MANIFEST) -> list[HubFile]:
    """Ask the hub for each file's size and hashes."""
    from huggingface_hub import HfApi

    api, out = HfApi(), []
    by_repo: dict[tuple[str, str], list[layout.WeightFile]] = {}
    for f in files:
        by_repo.setdefault((f.repo, f.revision), []).append(f)
    for (repo, revision), group in by_repo.items():
        try:
            found = api.get_paths_info(repo, [f.path for f in group], revision=revision)
        except Exception as e:  # httpx's, huggingface_hub's and the OS's errors alike: the source is out of reach
            raise SourceError(
                f"{len(group)} weight file(s) ({group[0].dest}, ...)", _hub(f"repository {repo}"), e
            ) from e
        info = {i.path: i for i in found}
        for f in group:
            if f.path not in info:
                raise FetchError(f"{f.dest}: {f.path} not found in {repo}@{revision}")
            item = info[f.path]
            sha = item.lfs.sha256 if item.lfs else ""
            out.append(HubFile(f, Entry(f.dest, int(item.size), sha), item.blob_id))
    return out


def _hub(what: str) -> str:
    """Where on the Hub a file or repository is, for a SourceError."""
    from huggingface_hub import constants

    return f"the Hugging Face Hub at {constants.ENDPOINT} ({what})"


def fetch_hub(root: Path, workers: int = 4, files: Iterable[layout.WeightFile] = layout.MANIFEST) -> list[str]:
    """Fetch the manifest's files from the hub (through its cache), verified, into `root`."""
    from huggingface_hub import hf_hub_download

    root.mkdir(parents=True, exist_ok=True)
    hashes = HashCache(root)
    todo = [h for h in hub_files(files) if not h.present(root, hashes)]

    def job(item: HubFile) -> None:
        f, e = item.source, item.entry
        try:
            cached = Path(hf_hub_download(f.repo, f.path, revision=f.revision))
        except Exception as err:  # huggingface_hub raises many types; name the file
            raise SourceError(e.path, _hub(f"{f.repo}/{f.path}"), err) from err
        if not e.sha256 and git_blob_sha1(cached) != item.blob_id:
            raise FetchError(f"{e.path}: content does not match the hub's git blob id {item.blob_id}")
        expected = e if e.sha256 else Entry(e.path, e.size, sha256_of(cached))
        target = root / e.path
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + PART)
        shutil.copyfile(cached, part)
        _accept(part, target, expected, hashes)

    run_parallel(todo, job, workers)
    return [h.entry.path for h in todo]


def fetch(
    root: Path,
    source_url: str | None = None,
    workers: int = 4,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
) -> list[str]:
    """Fetch from `source_url` / ICLIGHT_WEIGHTS_URL when set, else from the hub.

    A mirror's manifest says what to fetch, but `skip`'s files (an offset skipped skips its model's
    prepared UNets too); from the hub, `only` limits it to those destinations.
    One process at a time per folder (a lock file): several workers booting on one node download
    once, the others then find every file present and valid."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(root, source_url, workers, only, skip)


def _fetch(
    root: Path, source_url: str | None, workers: int, only: Iterable[str] | None, skip: Iterable[str]
) -> list[str]:
    url = source_url or config.WEIGHTS_URL.read()
    if url:
        log.info("fetching weights from mirror %s into %s", url, root)
        return fetch_mirror(url, root, workers, skip)
    log.info("fetching weights from the Hugging Face Hub into %s", root)
    wanted = None if only is None else set(only)
    return fetch_hub(root, workers, [f for f in layout.MANIFEST if wanted is None or f.dest in wanted])
