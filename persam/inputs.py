"""Input images of the per-image commands and of album search: files and folders (searched
recursively) as given, each with the name its results get below an output folder. One set
of rules for ``segment``, ``find``, ``calibrate`` and ``search``: what counts as an image, what
inside the output folder is skipped, and which output names or inputs would collide."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from persam_files import IMAGE_SUFFIXES, is_image_file, list_images


class InputError(ValueError):
    """Inputs that cannot be used as given (one line, with a way out)."""


@dataclass(frozen=True)
class InputImage:
    """One input image and where its results go: ``relative`` is its path below the common
    folder of all inputs, mirrored under ``--out``."""

    path: Path
    relative: Path

    def output(self, out: Path, suffix: str = ".png") -> Path:
        """``out/<relative folder>/<image name without extension><suffix>``."""
        return out / self.relative.parent / f"{self.relative.stem}{suffix}"

    def __str__(self) -> str:
        return str(self.path)


def collect_inputs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
                   exclude: Iterable[str | os.PathLike | None] = (),
                   output_suffixes: Sequence[str] = (".png",)) -> list[InputImage]:
    """Image files of ``inputs`` (files, or folders searched recursively; hidden files and
    folders are skipped), in the order given, folders sorted by path.

    A folder's images never include the files in ``exclude`` (the command's --ref-mask and
    similar: told apart by being named on the command line, never by their content) nor
    anything inside ``out`` (a previous run's results). Each image is mapped below ``out`` by
    its path relative to the deepest folder holding every input (a single folder input: that
    folder), so ``d1/x.jpg`` and ``d2/x.jpg`` give ``OUT/d1/x.png`` and ``OUT/d2/x.png``.
    Raises :class:`InputError` for a missing input, a folder without images, ``out`` being an
    input folder, two images that would write the same output file, or an output file (the
    image's name with one of ``output_suffixes``, under ``out``) that is an input or an
    excluded file: it would be overwritten.
    """
    if not inputs:
        raise InputError("no input images given")
    skipped = {Path(p).resolve() for p in exclude if p}
    out_resolved = Path(out).resolve() if out is not None else None
    found: list[Path] = []
    anchors: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            resolved = path.resolve()
            if out_resolved is not None and resolved == out_resolved:
                raise InputError(f"--out {out} is also an input folder; the masks would mix with (or "
                                 "replace) your images: choose another output folder")
            if out_resolved is not None and resolved.is_relative_to(out_resolved):
                raise InputError(f"input folder {path} is inside --out {out}, whose files are skipped as "
                                 "earlier results; choose an output folder outside your images")
            images = [p for p in list_images(path, recursive=True) if p.resolve() not in skipped
                      and not (out_resolved is not None and p.resolve().is_relative_to(out_resolved))]
            if not images:
                raise InputError(f"input folder {path} contains no images ({', '.join(IMAGE_SUFFIXES)}"
                                 ", searched recursively)")
            found.extend(images)
            anchors.append(_absolute(path))
        elif path.is_file():
            if not is_image_file(path):
                raise InputError(f"input {path} is not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
            found.append(path)
            anchors.append(_absolute(path).parent)
        elif path.exists():
            raise InputError(f"input {path} is neither a file nor a folder")
        else:
            raise InputError(f"input {path} not found")
    base = Path(os.path.commonpath([str(a) for a in anchors]))
    images: list[InputImage] = []
    seen: dict[Path, Path] = {}
    targets: dict[Path, Path] = {}
    for path in found:
        resolved = path.resolve()
        if resolved in seen:  # the same file given twice (e.g. a folder and a file in it)
            continue
        seen[resolved] = path
        image = InputImage(path, _absolute(path).relative_to(base))
        target = image.output(Path("OUT"))
        if target in targets:
            raise InputError(f"{targets[target]} and {path} would both be written as {target} (outputs "
                             "are named after the image without its extension); rename one of them")
        targets[target] = path
        images.append(image)
    if out is not None:  # e.g. the result OUT/a.png of an input OUT/a.png, given as a file
        protected = {**{resolved: "an input image" for resolved in seen},
                     **{p: "a file this command reads" for p in skipped}}
        for image in images:
            for suffix in output_suffixes:
                target = image.output(Path(out), suffix)
                owner = protected.get(target.resolve())
                if owner:
                    raise InputError(f"the result of {image.path} would be written as {target}, which is "
                                     f"{owner}: choose another --out")
    return images


def _absolute(path: Path) -> Path:
    """Absolute and normalized, but symlinks kept: an image linked from elsewhere is mirrored
    where the user sees it, not where its target lives."""
    return Path(os.path.abspath(path))
