"""Album search (README 'Album search'): find one or more concepts in a whole photo collection.

Every image is read once and encoded once for all concepts, in batches; results are appended
to ``OUT/results.jsonl`` after each batch, so a run that is stopped (Ctrl-C, a crash, SIGKILL)
resumes where it stopped. ``--index DIR`` keeps the encoder outputs (fp16) so that searching the
same album for a new concept skips the encoder. The same job runs on a Ray cluster
(``persam/search_ray.py``); both paths share :class:`SearchWorker`, so their rows are equal.

>>> from persam.search import search
>>> summary = search(["photos/"], ["dog.pt", "mug.pt"], "out/", checkpoint="mobile_sam.pt")
>>> summary.hits
{'dog': 12, 'mug': 3}
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import os
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from persam_files import (IMAGE_SUFFIXES, ImageReadError, atomic_write, read_image, voc_palette,
                          write_bytes, write_text)
from sam_core import ImageEmbedding

from .concept import Concept
from .find import Detection
from .inputs import InputError, collect_inputs
from .model import ImageSizeError, PerSAM, check_image_size
from .overlay import draw_overlay

RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"
SUMMARY_FILE = "summary.csv"
HTML_FILE = "index.html"
THUMB_SIZE = 256  # longest side of a contact-sheet thumbnail, pixels
DEFAULT_BATCH = 4
# Scores in results.jsonl keep 6 decimals: enough to rank, and short rows.
_DECIMALS = 6


class SearchError(ValueError):
    """A search that cannot start (no images, bad concept, bad option); one line, names the file."""


def _detect_all(persam: PerSAM, embedding: ImageEmbedding, concepts: Sequence[Concept],
                threshold: float | None, max_instances: int) -> list[Detection]:
    """Detections of every concept in one embedded image (one entry per concept, in order)."""
    return persam.find_many_embedding(embedding, list(concepts), threshold=threshold,
                                      max_instances=max_instances)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageItem:
    """One input file: absolute path, size and modification time when it was listed, and
    ``name``, its path relative to the common folder of all inputs (names the output files)."""

    path: str
    size: int
    mtime_ns: int
    name: str


def list_album(inputs: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = (),
               out: str | os.PathLike | None = None) -> list[ImageItem]:
    """Image files of ``inputs`` (folders recursively, by extension), sorted by absolute path,
    without duplicates and without anything inside ``out`` or the ``exclude`` folders.

    The files and their output names follow segment/find's rules
    (:func:`persam.inputs.collect_inputs`, the one place they live): ``out`` may not be
    an input folder, and two images whose outputs would share a name (``a.jpg`` and ``a.png``)
    are refused, before any work, rather than one overwriting the other's thumbnail and masks.
    """
    try:
        found = collect_inputs(inputs, out=out)
    except InputError as exc:
        raise SearchError(str(exc)) from None
    excluded = [os.path.abspath(p) for p in exclude]
    items: dict[str, ImageItem] = {}
    for image in found:
        path = os.path.abspath(image.path)
        if path in items or any(_inside(path, folder) for folder in excluded):
            continue
        stat = os.stat(path)
        items[path] = ImageItem(path, stat.st_size, stat.st_mtime_ns, image.relative.as_posix())
    if not items:
        raise SearchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return [items[path] for path in sorted(items)]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# ---------------------------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------------------------
def load_concepts(paths: Sequence[str | os.PathLike | Concept] | str | os.PathLike) -> dict[str, Concept]:
    """Concepts by name: a file's name without its suffix, a :class:`Concept`'s own ``name``
    (names must be unique). One path may be given alone."""
    if isinstance(paths, (str, os.PathLike, Concept)):
        paths = [paths]
    concepts: dict[str, Concept] = {}
    for path in paths:
        if isinstance(path, Concept):
            name = path.name
            if not name:
                raise SearchError("a Concept given to search has no name: give {name: concept} instead")
        else:
            name = Path(path).stem
        if name in concepts:
            raise SearchError(f"two concepts are named {name!r} ({path}); rename one")
        concepts[name] = path if isinstance(path, Concept) else Concept.load(path)
    if not concepts:
        raise SearchError("give at least one --concept FILE")
    return concepts


def concept_fingerprint(concept: Concept, model_fingerprint: str, threshold: float | None,
                        max_instances: int) -> str:
    """Hash of everything that decides a concept's results: its saved content (tensors,
    method, calibration), the searching model, and the search settings."""
    digest = hashlib.blake2b(digest_size=10)

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value):
                digest.update(str(key).encode())
                feed(value[key])
        else:
            digest.update(repr(value).encode())

    feed(concept.to_dict())
    feed({"model": model_fingerprint, "threshold": threshold, "max_instances": max_instances,
          "features": "fp16"})
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Embedding index
# ---------------------------------------------------------------------------------------------
def image_content_key(image: np.ndarray) -> str:
    """sha256 of the decoded RGB pixels (and shape): the encoder's actual input, so re-saved or
    re-tagged files with the same pixels share an entry, and a file whose decoding changes does not."""
    digest = hashlib.sha256(f"{image.shape}".encode())
    digest.update(np.ascontiguousarray(image, dtype=np.uint8).data)
    return digest.hexdigest()


def to_storage_precision(features: torch.Tensor) -> torch.Tensor:
    """Round encoder features through fp16, the precision the index stores. Every search
    decodes from these, so results do not depend on whether an embedding came from the index."""
    return features.to(torch.float16).to(features.dtype)


class EmbeddingIndex:
    """Encoder outputs on disk: ``DIR/<model fingerprint>/<key[:2]>/<key>.pt`` holding fp16
    features (1, 256, 64, 64) with input and original sizes, about 2 MiB per image.

    Entries are written atomically (temp file + rename), so several processes (Ray actors) can
    share a folder. An entry that cannot be read or does not fit is ignored and rewritten.
    """

    FORMAT = 1

    def __init__(self, folder: str | os.PathLike, model_fingerprint: str) -> None:
        self.folder = Path(folder) / model_fingerprint
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pt"

    def get(self, key: str, original_size: tuple[int, int]) -> ImageEmbedding | None:
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            features = data["features"]
            ok = (int(data.get("format", 0)) == self.FORMAT and isinstance(features, torch.Tensor)
                  and features.dtype == torch.float16 and tuple(features.shape) == (1, 256, 64, 64)
                  and tuple(data["original_size"]) == tuple(original_size))
        except Exception:  # torn or foreign file: an index is a cache, re-encode
            ok = False
        if not ok:
            self.misses += 1
            return None
        self.hits += 1
        return ImageEmbedding(features.float(), tuple(int(v) for v in data["input_size"]),
                              tuple(int(v) for v in data["original_size"]))

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        data = {"format": self.FORMAT,
                "features": embedding.features.detach().to("cpu", torch.float16).contiguous(),
                "input_size": list(embedding.input_size),
                "original_size": list(embedding.original_size)}
        atomic_write(self.path(key), lambda temp: torch.save(data, temp))


# ---------------------------------------------------------------------------------------------
# The worker: a batch of files in, rows (and the side files' bytes) out
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageResult:
    """What one image gives: a results row, or an errors row; plus the side files (thumbnails,
    masks, overlays) as ``{path relative to OUT: bytes}`` for the driver to write."""

    item: ImageItem
    row: dict | None = None
    error: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    encoded: bool = False  # went through the encoder in this run
    from_index: bool = False  # embedding read from the index


@dataclass(frozen=True)
class SearchSettings:
    threshold: float | None = None
    max_instances: int = 10
    masks: bool = False
    overlays: bool = False
    index: str | None = None


class SearchWorker:
    """Holds one model and the concepts; turns a batch of :class:`ImageItem` into
    :class:`ImageResult` (in order). Used as is locally and inside each Ray actor."""

    def __init__(self, persam: PerSAM, concepts: Mapping[str, Concept], settings: SearchSettings) -> None:
        self.persam = persam
        self.names = list(concepts)
        self.concepts = [concepts[name] for name in self.names]
        for concept in self.concepts:
            persam.check_concept(concept)
        self.settings = settings
        self.fingerprints = {name: concept_fingerprint(concepts[name], persam.fingerprint,
                                                       settings.threshold, settings.max_instances)
                             for name in self.names}
        self.index = EmbeddingIndex(settings.index, persam.fingerprint) if settings.index else None

    def process(self, items: Sequence[ImageItem]) -> list[ImageResult]:
        results = [ImageResult(item) for item in items]
        images: dict[int, np.ndarray] = {}
        for position, result in enumerate(results):
            try:
                images[position] = read_image(result.item.path)
                check_image_size(images[position], result.item.path)
            except (ImageReadError, ImageSizeError) as exc:
                images.pop(position, None)
                result.error = {"image": result.item.path, "size": result.item.size,
                                "mtime_ns": result.item.mtime_ns, "error": str(exc).splitlines()[0]}
        embeddings = self._embed(images, results)
        for position, image in images.items():
            self._describe(results[position], image, embeddings[position])
        return results

    def _embed(self, images: dict[int, np.ndarray], results: list[ImageResult]) -> dict[int, ImageEmbedding]:
        """One embedding per image: from the index where it has one, the rest in one encoder batch."""
        embeddings: dict[int, ImageEmbedding] = {}
        keys: dict[int, str] = {}
        if self.index is not None:
            for position, image in images.items():
                keys[position] = image_content_key(image)
                found = self.index.get(keys[position], tuple(image.shape[:2]))
                if found is not None:
                    embeddings[position] = found
                    results[position].from_index = True
        missing = [position for position in images if position not in embeddings]
        if missing:
            encoded = self.persam.engine.encode_batch([images[position] for position in missing])
            for position, embedding in zip(missing, encoded):
                results[position].encoded = True
                if self.index is not None:
                    self.index.put(keys[position], embedding)
                embeddings[position] = embedding
        device = self.persam.engine.device
        return {position: ImageEmbedding(to_storage_precision(e.features.to(device)), e.input_size,
                                         e.original_size)
                for position, e in embeddings.items()}

    def _describe(self, result: ImageResult, image: np.ndarray, embedding: ImageEmbedding) -> None:
        item = result.item
        detections = _detect_all(self.persam, embedding, self.concepts, self.settings.threshold,
                                 self.settings.max_instances)
        concepts = {}
        for name, detection in zip(self.names, detections):
            entry = {"fingerprint": self.fingerprints[name], "threshold": _rounded(detection.threshold),
                     **_rounded(detection.to_dict())}
            if detection.present:
                for key, relative in side_files(name, item, self.settings).items():
                    if key == "thumbnail":
                        data = _thumbnail(image, detection)
                    elif key == "mask":
                        data = _png_bytes(detection.label_map())
                    else:
                        data = _jpeg_bytes(draw_overlay(image, [i.mask for i in detection.instances]))
                    result.files[relative] = data
                    entry[key] = relative
            concepts[name] = entry
        result.row = {"image": item.path, "width": int(image.shape[1]), "height": int(image.shape[0]),
                      "size": item.size, "mtime_ns": item.mtime_ns, "concepts": concepts}


def _rounded(value):
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    if isinstance(value, np.ndarray):
        return _rounded(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), _DECIMALS) if np.isfinite(value) else None
    return value


SIDE_KEYS = ("thumbnail", "mask", "overlay")  # a hit's entry keys that name a file under OUT


def side_files(concept: str, item: ImageItem, settings: SearchSettings) -> dict[str, str]:
    """The files a hit of ``concept`` in ``item`` gets, ``{entry key: path under OUT}``, in the
    order they are written: always a thumbnail, a mask / overlay when the settings ask."""
    stem = _output_stem(item.name)
    files = {"thumbnail": f"thumbs/{concept}/{stem}.jpg"}
    if settings.masks:
        files["mask"] = f"masks/{concept}/{stem}.png"
    if settings.overlays:
        files["overlay"] = f"overlays/{concept}/{stem}.jpg"
    return files


def _output_stem(name: str) -> str:
    """An image's output name: its path under the inputs' common folder, suffix dropped
    (``trips/2019/a.jpg`` -> ``trips/2019/a``), so nested albums keep their layout."""
    return Path(name).with_suffix("").as_posix()


def _png_bytes(labels: np.ndarray) -> bytes:
    image = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _thumbnail(image: np.ndarray, detection) -> bytes:
    """A small JPEG of the image with each instance outlined and the best score written on it.
    Image and masks are shrunk first, so outlines keep a visible width at any photo size."""
    height, width = image.shape[:2]
    scale = min(1.0, THUMB_SIZE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    masks = [cv2.resize(instance.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
             for instance in detection.instances]
    picture = draw_overlay(small, masks, alpha=0.35) if masks else small
    text = f"{detection.score:.2f}" + (f" x{len(masks)}" if len(masks) > 1 else "")
    origin = (4, min(size[1] - 4, 18))
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return _jpeg_bytes(picture)


# ---------------------------------------------------------------------------------------------
# Output folder: results.jsonl / errors.jsonl (append per batch, resume), summary, index.html
# ---------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of a JSON-lines file; a torn or malformed line (a run killed while
    writing it) is left out, and so redone by the resuming run."""
    if not path.is_file():
        return []
    rows = []
    data = path.read_bytes()
    # The piece after the last newline is empty, or a line whose writer was killed: left out.
    for line in data.split(b"\n")[:-1]:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("image"), str):
            rows.append(row)
    return rows


def _row_line(row: dict) -> str:
    return json.dumps(row, allow_nan=False, separators=(", ", ": ")) + "\n"


class JsonlAppender:
    """Appends whole lines and makes them durable before returning.

    An appended file cannot be written to a temp file and renamed (that would rewrite the whole
    file per batch); instead each batch goes out in one ``os.write`` of complete lines followed by
    ``fsync``. A kill can at worst leave the last line torn, which :func:`read_jsonl` drops.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def append(self, rows: Iterable[dict]) -> None:
        data = "".join(_row_line(row) for row in rows).encode()
        if not data:
            return
        if self.fd is None:
            # Created with its first line, not before (README: nothing until the first result).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _write_rows(path: Path, rows: Sequence[dict]) -> None:
    """Replace a JSON-lines file atomically (only when its bytes change; an empty one is not
    created, so a run stopped before its first result leaves no empty files behind)."""
    text = "".join(_row_line(row) for row in rows)
    if (path.is_file() and path.read_bytes() == text.encode()) or (not text and not path.exists()):
        return
    write_text(path, text)


@dataclass
class SearchSummary:
    """What a run did: ``images`` searched (rows in results.jsonl), ``hits`` per concept,
    ``errors`` (unreadable files), ``skipped`` (files already done before this run, searched
    or not), ``skipped_errors`` (those of them that could not be used), ``encoded`` (encoder
    passes this run), ``index_hits`` (embeddings read from the index) and ``dropped`` (earlier
    rows of images that are not among this run's inputs)."""

    out: Path
    images: int
    hits: dict[str, int]
    errors: int
    skipped: int
    encoded: int
    index_hits: int
    interrupted: bool = False
    skipped_errors: int = 0
    dropped: int = 0

    def text(self) -> str:
        files = self.images + self.errors
        unreadable = f"{self.errors} could not be used" + (f" (see {self.out / ERRORS_FILE})" if self.errors else "")
        # "done before" counts files, as the line does: say how many of them were unusable.
        before = f"{self.skipped} of them done before this run" + (
            f" ({self.skipped - self.skipped_errors} searched, {self.skipped_errors} could not be used)"
            if self.skipped_errors else "")
        lines = [f"{_count(files, 'file')}: {self.images} searched, {unreadable}; {before}, "
                 f"{_count(self.encoded, 'encoder pass', 'encoder passes')} now, "
                 f"{self.index_hits} from the index"]
        lines += [f"  {name}: {_count(count, 'hit')}" for name, count in self.hits.items()]
        lines.append(f"results: {self.out / RESULTS_FILE}; contact sheet: {self.out / HTML_FILE}")
        return "\n".join(lines)


def _count(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


class _OutputFolder:
    """The state of OUT: which images are done, and the writers of its files. Nothing is
    created here: OUT and its files appear with the first result (README 'Album search')."""

    def __init__(self, out: Path, items: Sequence[ImageItem], fingerprints: dict[str, str],
                 settings: SearchSettings) -> None:
        self.out = out
        self.order = {item.path: position for position, item in enumerate(items)}
        current = {item.path: item for item in items}

        def same_file(row: dict) -> bool:
            item = current.get(row["image"])
            return item is not None and row.get("size") == item.size and row.get("mtime_ns") == item.mtime_ns

        def same_concepts(row: dict) -> bool:
            concepts = row.get("concepts")
            return (isinstance(concepts, dict) and set(concepts) == set(fingerprints)
                    and all(isinstance(concepts[n], dict) and concepts[n].get("fingerprint") == fp
                            for n, fp in fingerprints.items()))

        def same_files(row: dict) -> bool:
            """A hit's side files are the ones this run would write (the --masks / --overlay
            asked for now, at the names of this run's inputs), and on disk. Files no longer asked
            for are taken off the row (and removed at the end, see _remove_orphans)."""
            item = current[row["image"]]
            for name, entry in row["concepts"].items():
                if not entry.get("present"):
                    continue
                expected = side_files(name, item, settings)
                for key in SIDE_KEYS:
                    if key not in expected:
                        entry.pop(key, None)
                    elif entry.get(key) != expected[key] or not (out / expected[key]).is_file():
                        return False
            return True

        stored = read_jsonl(out / RESULTS_FILE)
        stored_errors = read_jsonl(out / ERRORS_FILE)
        # Rows of images that are not among this run's inputs are dropped: counted, to warn.
        self.dropped = len({row["image"] for row in stored + stored_errors if row["image"] not in current})
        self.rows: dict[str, dict] = {}
        for row in stored:
            if same_file(row) and same_concepts(row) and same_files(row):
                self.rows[row["image"]] = row  # a later duplicate replaces an earlier one
        self.errors: dict[str, dict] = {}
        for row in stored_errors:
            if same_file(row) and row["image"] not in self.rows:
                self.errors[row["image"]] = row  # same bytes, same failure: not retried
        # Keep only rows this run stands by (drops torn lines, stale rows, other concepts), in order.
        self._rewrite()
        # Temp files of a run killed mid-write (atomic_write names them .<stem>.<random>.tmp<suffix>).
        for leftover in out.rglob(".*.tmp*") if out.is_dir() else ():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        self.results = JsonlAppender(out / RESULTS_FILE)
        self.error_log = JsonlAppender(out / ERRORS_FILE)

    def done(self, item: ImageItem) -> bool:
        return item.path in self.rows or item.path in self.errors

    def _sorted(self, rows: dict[str, dict]) -> list[dict]:
        return [rows[path] for path in sorted(rows, key=self.order.__getitem__)]

    def _rewrite(self) -> None:
        _write_rows(self.out / RESULTS_FILE, self._sorted(self.rows))
        _write_rows(self.out / ERRORS_FILE, self._sorted(self.errors))

    def add(self, results: Sequence[ImageResult]) -> None:
        """Side files first (atomically), then the rows: a row never points at a missing file."""
        for result in results:
            for relative, data in result.files.items():
                write_bytes(self.out / relative, data)
        rows = [r.row for r in results if r.row is not None]
        errors = [r.error for r in results if r.error is not None]
        self.results.append(rows)
        self.error_log.append(errors)
        self.rows.update((row["image"], row) for row in rows)
        self.errors.update((row["image"], row) for row in errors)

    def finish(self, names: Sequence[str]) -> dict[str, int]:
        self.results.close()
        self.error_log.close()
        self._rewrite()  # rows redone after a change were appended out of order: sort them
        ordered = self._sorted(self.rows)
        hits = {name: sum(bool(row["concepts"][name]["present"]) for row in ordered) for name in names}
        lines = ["concept,images,hits\n"] + [f"{_csv_field(name)},{len(ordered)},{hits[name]}\n"
                                             for name in names]
        write_text(self.out / SUMMARY_FILE, "".join(lines))
        write_text(self.out / HTML_FILE, contact_sheet(self.out, ordered, names, self._sorted(self.errors)))
        self._remove_orphans(ordered)
        return hits

    def _remove_orphans(self, rows: Sequence[dict]) -> None:
        """Delete the thumbnails, masks and overlays no row points at (rows dropped or redone,
        masks no longer asked for), and folders left empty: OUT then holds what a fresh run with
        these inputs and options writes. Only the three side-file folders, which are the search's own."""
        kept = {entry[key] for row in rows for entry in row["concepts"].values() for key in SIDE_KEYS
                if key in entry}
        for top in ("thumbs", "masks", "overlays"):
            folder = self.out / top
            if not folder.is_dir():
                continue
            # Deepest first (a folder sorts before its contents): files, then emptied folders.
            for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
                if path.is_dir() and not path.is_symlink():
                    if not any(path.iterdir()):
                        path.rmdir()
                elif path.relative_to(self.out).as_posix() not in kept:
                    path.unlink()

    def close(self) -> None:
        self.results.close()
        self.error_log.close()


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _href(out: Path, target: str) -> str:
    """A relative URL from OUT to ``target`` (absolute path or path under OUT)."""
    relative = os.path.relpath(target if os.path.isabs(target) else out / target, out)
    return urllib.parse.quote(Path(relative).as_posix())


def contact_sheet(out: Path, rows: Sequence[dict], names: Sequence[str], errors: Sequence[dict]) -> str:
    """``index.html``: per concept, the hits best first as outlined thumbnails with scores, each
    linking to the photo (and its mask / overlay when written). Static, relative links only."""
    esc = html.escape
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>persam search</title><style>",
             "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:4px;"
             "vertical-align:top;width:260px}figure img{max-width:256px;max-height:256px}"
             "figcaption{font-size:12px;word-break:break-all}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px}",
             "</style></head><body>", f"<h1>persam search: {len(rows)} images</h1>",
             "<table><tr><th>concept</th><th>hits</th></tr>"]
    per_concept = {}
    for name in names:
        hits = [row for row in rows if row["concepts"][name]["present"]]
        hits.sort(key=lambda row: (-row["concepts"][name]["score"], row["image"]))
        per_concept[name] = hits
        parts.append(f"<tr><td><a href=\"#{esc(name)}\">{esc(name)}</a></td><td>{len(hits)}</td></tr>")
    parts.append("</table>")
    if errors:
        parts.append(f"<p>{_count(len(errors), 'file')} could not be read: see "
                     f"<a href=\"{ERRORS_FILE}\">{ERRORS_FILE}</a>.</p>")
    for name, hits in per_concept.items():
        parts.append(f"<h2 id=\"{esc(name)}\">{esc(name)}: {len(hits)} hits</h2>")
        for row in hits:
            entry = row["concepts"][name]
            label = os.path.basename(row["image"])
            extra = "".join(f" <a href=\"{esc(_href(out, entry[kind]))}\">{kind}</a>"
                            for kind in ("mask", "overlay") if kind in entry)
            count = len(entry["instances"])
            parts.append(
                f"<figure><a href=\"{esc(_href(out, row['image']))}\">"
                f"<img src=\"{esc(_href(out, entry['thumbnail']))}\" alt=\"{esc(label)}\" loading=\"lazy\"></a>"
                f"<figcaption>{esc(label)}<br>score {entry['score']:.3f}, {count} "
                f"instance{'s' if count != 1 else ''}{extra}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def batched(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def search(inputs: Sequence[str | os.PathLike] | str | os.PathLike,
           concepts: Sequence[str | os.PathLike | Concept] | str | os.PathLike | Mapping[str, Concept],
           out: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None, model_type: str = "auto",
           device: str | None = None, persam: PerSAM | None = None, threshold: float | None = None,
           max_instances: int = 10, masks: bool = False, overlays: bool = False,
           batch_size: int = DEFAULT_BATCH, index: str | os.PathLike | None = None,
           ray: bool | str | None = None, ray_actors: int = 1, ray_cpus: float = 1.0,
           ray_gpus: float = 0.0, progress: bool = True) -> SearchSummary:
    """Search ``inputs`` (files and folders) for each concept and write OUT (README 'Album search').

    Give the model as ``checkpoint`` (and ``model_type``, ``device``) or as a ready ``persam``
    (local runs only). ``ray``: False/None runs here; True starts (or joins) a local Ray;
    a string is the address of a running Ray cluster, with ``ray_actors`` actors of
    ``ray_cpus`` CPUs and ``ray_gpus`` GPUs each. A rerun with the same OUT resumes (rows of
    images not among ``inputs`` are dropped, with a warning). Ctrl-C
    raises :class:`SearchInterrupted` after everything finished so far is on disk.
    """
    if batch_size < 1:
        raise SearchError(f"--batch must be at least 1, got {batch_size}")
    if max_instances < 1:
        raise SearchError(f"max_instances must be at least 1, got {max_instances}")
    out = Path(out)
    named = dict(concepts) if isinstance(concepts, Mapping) else load_concepts(concepts)
    if isinstance(inputs, (str, os.PathLike)):  # one file or folder
        inputs = [inputs]
    items = list_album(inputs, exclude=[index] if index else [], out=out)
    settings = SearchSettings(threshold=threshold, max_instances=max_instances, masks=masks,
                              overlays=overlays, index=os.path.abspath(index) if index else None)
    if ray:
        if checkpoint is None:
            raise SearchError("a Ray search needs the checkpoint path (each actor loads the model)")
        from .search_ray import RaySearch  # lazy: Ray is an optional extra

        runner = RaySearch(str(checkpoint), model_type, device, named, settings,
                           address=None if ray is True else str(ray), actors=ray_actors,
                           cpus=ray_cpus, gpus=ray_gpus)
    else:
        if persam is None:
            if checkpoint is None:
                raise SearchError("give a checkpoint (or a PerSAM) to search with")
            persam = PerSAM.from_checkpoint(checkpoint, model_type, device=device, cache_size=0)
        runner = LocalSearch(SearchWorker(persam, named, settings))

    folder = _OutputFolder(out, items, runner.fingerprints, settings)
    if folder.dropped:
        warnings.warn(f"{out / RESULTS_FILE} had results for {_count(folder.dropped, 'image')} that "
                      "are not among this run's inputs (removed, or in folders not given this time); "
                      "they are dropped, with their thumbnails, masks and overlays. Give all folders "
                      "in one run (or another --out) to keep them", stacklevel=2)
    todo = [item for item in items if not folder.done(item)]
    skipped = len(items) - len(todo)
    skipped_errors = sum(item.path in folder.errors for item in items)
    encoded = index_hits = 0
    from tqdm import tqdm

    # tqdm's rate (img/s) and remaining time are the progress line the issue asks for.
    bar = tqdm(total=len(todo), unit="img", desc="search", disable=not progress, dynamic_ncols=True)
    try:
        for results in runner.run(todo, batch_size):
            folder.add(results)
            encoded += sum(r.encoded for r in results)
            index_hits += sum(r.from_index for r in results)
            bar.update(len(results))
    except KeyboardInterrupt:
        folder.close()
        done = len(folder.rows) + len(folder.errors)
        raise SearchInterrupted(SearchSummary(out, done, {}, len(folder.errors), skipped, encoded,
                                              index_hits, interrupted=True, skipped_errors=skipped_errors,
                                              dropped=folder.dropped)) from None
    finally:
        bar.close()
        folder.close()
        runner.close()
    hits = folder.finish(list(named))
    return SearchSummary(out, len(folder.rows), hits, len(folder.errors), skipped, encoded, index_hits,
                         skipped_errors=skipped_errors, dropped=folder.dropped)


class LocalSearch:
    """Runs the worker in this process, one batch at a time, in path order."""

    def __init__(self, worker: SearchWorker) -> None:
        self.worker = worker
        self.fingerprints = worker.fingerprints

    def run(self, todo: Sequence[ImageItem], batch_size: int) -> Iterator[list[ImageResult]]:
        for batch in batched(todo, batch_size):
            yield self.worker.process(batch)

    def close(self) -> None:
        pass


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search: everything finished before it is on disk; rerun to resume."""

    def __init__(self, summary: SearchSummary) -> None:
        super().__init__(f"interrupted after {summary.images} images")
        self.summary = summary


