"""Model names -> checksummed, cached checkpoint files (README 'Models').

``resolve_checkpoint(name_or_path)`` turns what a user wrote after ``--checkpoint`` into a local
path: an existing file or folder as is; a model name (``vit_t``, ``vit_b``, ``vit_l``,
``vit_h`` or an entry of ``PERSAM_MODELS_FILE``) to its cached file, downloaded on first use;
a Hugging Face hub id (``owner/name``) to a local snapshot folder (see ``hf_convert.py``).

Downloads go through pooch (temporary file in the cache folder, SHA-256 check, rename only
after the check passes), with a downloader of ours on top of requests that keeps the bytes
received so far in ``<file>.part`` and asks for the rest with an HTTP Range header, so an
interrupted 2.5 GB download resumes instead of restarting. A file under the final name has
always passed its checksum; ``<file>.sha256`` records the check so later uses do not re-hash
gigabytes (a file put in the cache by hand is hashed once, on first use).

Environment: ``PERSAM_HOME`` (cache folder; default: the platform's user cache folder),
``PERSAM_OFFLINE=1`` (never download), ``PERSAM_MODELS_FILE`` (JSON of extra or overriding
entries: ``{"NAME": {"url": ..., "sha256": ..., "bytes": N, "model_type": "vit_t"}}``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from .build import CheckpointError


class DownloadError(CheckpointError):
    """A named model that could not be fetched or verified; one line, naming the URL and the file."""


@dataclass(frozen=True)
class ModelEntry:
    """A downloadable checkpoint: where it lives, its SHA-256, and its size in bytes if known."""

    name: str
    url: str
    sha256: str
    bytes: int | None = None
    model_type: str | None = None

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name or f"{self.name}.pth"


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

# The official releases (README 'Models'): the SAM README's links and MobileSAM's weights/ file.
OFFICIAL_MODELS: dict[str, ModelEntry] = {
    entry.name: entry for entry in (
        ModelEntry("vit_t", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                   "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", 40728226, "vit_t"),
        ModelEntry("vit_b", _SAM_URL + "sam_vit_b_01ec64.pth",
                   "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383, "vit_b"),
        ModelEntry("vit_l", _SAM_URL + "sam_vit_l_0b3195.pth",
                   "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607, "vit_l"),
        ModelEntry("vit_h", _SAM_URL + "sam_vit_h_4b8939.pth",
                   "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879, "vit_h"),
    )
}
DEFAULT_MODEL = "vit_t"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# owner/name as the Hugging Face hub spells repository ids; checked only when no such path exists.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt", ".safetensors")


def offline() -> bool:
    return os.environ.get("PERSAM_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def cache_dir() -> Path:
    """``$PERSAM_HOME``, else the platform's user cache folder for persam."""
    home = os.environ.get("PERSAM_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("persam", appauthor=False))


def _read_models_file(path: Path) -> dict[str, ModelEntry]:
    where = f"PERSAM_MODELS_FILE {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{where} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} must hold a JSON object {{name: {{url, sha256, ...}}}}")
    entries = {}
    for name, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) \
                or not isinstance(spec.get("sha256"), str):
            raise CheckpointError(f"{where}: entry {name!r} needs string fields 'url' and 'sha256'")
        sha = spec["sha256"].lower().removeprefix("sha256:")
        if not _HEX64.match(sha):
            raise CheckpointError(f"{where}: entry {name!r} has a sha256 that is not 64 hex digits")
        size = spec.get("bytes")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise CheckpointError(f"{where}: entry {name!r} has 'bytes' that is not a whole number")
        model_type = spec.get("model_type")
        if model_type is not None and not isinstance(model_type, str):
            raise CheckpointError(f"{where}: entry {name!r} has a 'model_type' that is not a string")
        entries[name] = ModelEntry(name, spec["url"], sha, size, model_type)
    return entries


def model_entries() -> dict[str, ModelEntry]:
    """The official names plus (overriding them) the entries of ``$PERSAM_MODELS_FILE``."""
    entries = dict(OFFICIAL_MODELS)
    extra = os.environ.get("PERSAM_MODELS_FILE", "").strip()
    if extra:
        entries.update(_read_models_file(Path(extra).expanduser()))
    return entries


def cached_path(entry: ModelEntry) -> Path:
    """Where the entry's file lives in the cache (whether or not it is there yet)."""
    return cache_dir() / entry.filename


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def is_cached(entry: ModelEntry) -> bool:
    """True when the cached file exists and was verified against this entry's SHA-256."""
    path = cached_path(entry)
    try:
        return path.is_file() and _marker(path).read_text().strip() == entry.sha256
    except OSError:
        return False


def partial_bytes(entry: ModelEntry) -> int:
    """Bytes of an interrupted download waiting to be resumed (0 when none)."""
    try:
        return _partial(cached_path(entry)).stat().st_size
    except OSError:
        return 0


def _record_verified(path: Path, sha256: str) -> None:
    from persam_files import write_text

    write_text(_marker(path), sha256 + "\n")


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _human(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _notice(message: str) -> None:
    print(f"persam: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs its own 'Downloading ...' line at INFO; ours (with name and size) replaces it."""
    import pooch

    logger = pooch.get_logger()  # pooch's own Logger object (not registered with logging)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _lock(handle) -> None:
    """An exclusive lock on the partial file, so two processes never append to it at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a clash then fails the checksum instead
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise DownloadError(f"{handle.name} is being written by another process; wait for it "
                            f"to finish") from None


class ResumingDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that resumes.

    Bytes go to ``part`` (a stable name next to the final file). If ``part`` already holds the
    start of the file, only the rest is requested (``Range: bytes=N-``); a server that answers
    200 instead of 206 sends the whole file, which then replaces the partial one. When the
    transfer ends, ``part`` is renamed onto pooch's temporary file, which pooch checks against
    the SHA-256 and renames to the final name (or deletes on a mismatch).
    """

    def __init__(self, part: Path, expected_bytes: int | None = None, label: str = "",
                 timeout: float = 60.0, chunk_size: int = 1 << 20, progress: bool = True) -> None:
        self.part = part
        self.progress = progress  # False: no bar at all; True: a bar when stderr is a terminal
        self.expected_bytes = expected_bytes
        self.label = label
        self.timeout = timeout
        self.chunk_size = chunk_size

    def __call__(self, url: str, output_file: str, pooch=None) -> None:
        import requests
        from tqdm.auto import tqdm

        self.part.parent.mkdir(parents=True, exist_ok=True)
        with open(self.part, "ab") as out:
            _lock(out)
            offset = out.seek(0, os.SEEK_END)
            if self.expected_bytes is not None and offset > self.expected_bytes:
                out.truncate(0)  # longer than the file can be: start again
                offset = 0
            if self.expected_bytes is None or offset < self.expected_bytes:
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
                    if offset and response.status_code == 416:
                        pass  # nothing left to send: the partial file is complete (the hash decides)
                    else:
                        response.raise_for_status()
                        if offset and response.status_code != 206:
                            out.truncate(0)  # the server ignored Range and sends everything
                            offset = 0
                        length = response.headers.get("content-length")
                        total = offset + int(length) if length and length.isdigit() else self.expected_bytes
                        with tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                  desc=self.label, disable=None if self.progress else True, leave=False) as bar:
                            for chunk in response.iter_content(chunk_size=self.chunk_size):
                                out.write(chunk)
                                bar.update(len(chunk))
                        if total is not None and out.tell() < total:  # a server that closed early
                            raise requests.exceptions.ChunkedEncodingError(
                                f"connection closed after {out.tell()} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        os.replace(self.part, output_file)


def download(entry: ModelEntry, quiet: bool = False, progress: bool = True) -> Path:
    """Fetch ``entry`` into the cache (resuming a partial download), verify, return the path."""
    import pooch
    import requests

    path = cached_path(entry)
    part = _partial(path)
    if offline():
        raise DownloadError(f"{entry.name} is not cached and downloads are off (PERSAM_OFFLINE=1): "
                            f"download {entry.url} and save it as {path}")
    done = partial_bytes(entry)
    if not quiet:
        resume = f", resuming after {_human(done)}" if done else ""
        _notice(f"downloading {entry.name} ({entry.filename}, {_human(entry.bytes)}) from {entry.url} "
                f"to {path}{resume}")
    downloader = ResumingDownloader(part, entry.bytes, label=entry.filename, progress=progress)
    try:
        try:
            with _quiet_pooch():
                pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}", fname=path.name,
                               path=path.parent, downloader=downloader)
        finally:
            if partial_bytes(entry) == 0:  # nothing received: leave no empty .part behind
                part.unlink(missing_ok=True)
    except DownloadError:
        raise
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DownloadError(f"cannot download {entry.name}: {entry.url} answered HTTP {status}; "
                            f"download it by hand and save it as {path}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError) as exc:
        have = partial_bytes(entry)
        if have:
            of = f" of {entry.bytes}" if entry.bytes else ""
            raise DownloadError(f"download of {entry.name} from {entry.url} was interrupted after "
                                f"{have}{of} bytes ({type(exc).__name__}); run again to resume "
                                f"(kept in {part})") from None
        raise DownloadError(f"cannot download {entry.name}: no connection to {entry.url} "
                            f"({type(exc).__name__}); download it by hand and save it as {path}") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"cannot download {entry.name} from {entry.url} ({type(exc).__name__}); "
                            f"download it by hand and save it as {path}") from None
    except ValueError as exc:  # pooch: the SHA-256 does not match; it has deleted the file
        # (after the requests errors: some of those, e.g. InvalidURL, are ValueErrors too)
        part.unlink(missing_ok=True)
        detail = " ".join(str(exc).split())
        got = re.search(r"got ([0-9a-f]{64})", detail)
        raise DownloadError(
            f"{entry.name}: the file downloaded from {entry.url} has SHA-256 "
            f"{got.group(1) if got else '(other)'}, expected {entry.sha256}; the download was deleted"
        ) from None
    except OSError as exc:
        raise DownloadError(f"cannot write {entry.name} to {path} ({exc.strerror or exc})") from None
    _record_verified(path, entry.sha256)
    return path


def fetch(entry: ModelEntry, quiet: bool = False, progress: bool = True) -> Path:
    """The cached file of ``entry``: verified once (a file placed by hand is hashed on first
    use), downloaded when absent or when its checksum is not the entry's."""
    path = cached_path(entry)
    if is_cached(entry):
        return path
    if path.is_file():
        if not quiet:
            _notice(f"verifying {path} ({_human(path.stat().st_size)}) against the SHA-256 of {entry.name}")
        if _sha256(path) == entry.sha256:
            _record_verified(path, entry.sha256)
            return path
        if offline():
            raise DownloadError(f"{path} does not match the SHA-256 of {entry.name} and downloads are "
                                f"off (PERSAM_OFFLINE=1): download {entry.url} and save it as {path}")
        if not quiet:
            _notice(f"{path} does not match the SHA-256 of {entry.name}; downloading it again")
        _marker(path).unlink(missing_ok=True)
    return download(entry, quiet=quiet, progress=progress)


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(_CHECKPOINT_SUFFIXES)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint path for what the user named.

    An existing file or folder wins; then a model name (official or from
    ``PERSAM_MODELS_FILE``), fetched into the cache on first use; then a Hugging Face hub id
    (``owner/name``, needs ``persam[hub]``), fetched into the hub's cache. Anything else is a
    ``CheckpointError`` "checkpoint X not found".
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = os.fspath(name_or_path)
    entries = model_entries()
    if text in entries:
        return fetch(entries[text])
    if looks_like_hub_id(text) and not path.parent.is_dir():  # "models/x" with models/ here is a path
        from .hf_convert import hub_snapshot

        return hub_snapshot(text)
    names = ", ".join(entries)
    raise CheckpointError(f"checkpoint {path} not found (not a file, folder, model name ({names}) "
                          f"or hub id)")
