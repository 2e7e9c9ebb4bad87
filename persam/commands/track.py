"""``persam track``: follow the objects of a first-frame mask through a video.

Frames come from a folder of images (in name order, numbers by value: frame2 before frame10) or
a video file (read with OpenCV).
One palette PNG of object ids is written per frame into ``--out`` (named after the frame
files, or 00000.png, 00001.png, ... for a video); ``--video FILE`` also writes an overlay
video with each object in its palette colour.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from persam_files import (IMAGE_SUFFIXES, MaskReadError, atomic_write, list_images, read_image,
                          read_image_size, read_label_map, read_palette, save_label_png, voc_palette)

from ..masks import load_mask
from ..overlay import draw_overlay
from .common import add_model_args, check_fit_steps, load_sam
from .support import check_output_dir, check_output_file, plural, show_progress

VOID_ID = 255  # DAVIS: "void" pixels of a palette annotation, not an object
MAX_GREY_IDS = 32  # a greyscale first mask with at most this many values may be a label map of ids
DEFAULT_FPS = 24.0


def frame_order(path: Path) -> list[tuple[int, int | str]]:
    """Sort key for frame files: numbers by value ("frame2" before "frame10", as ffmpeg's
    unpadded ``%d`` names them), the rest by text; zero-padded names keep their order."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", path.name) if part]


class FrameSource:
    """The frames of a folder of images (in name order, numbers by value) or of a video file,
    read lazily.

    ``names``: output file stems, one per frame (image stems, or 00000... for a video; for a
    video the list is filled while iterating). ``first_frame()``: (H, W, 3) RGB uint8.
    Opening checks that frames exist and the first one is readable; for a folder, also that
    every other frame is an image of the first one's size (read from its header, so a file
    truncated after an intact header is only found when its frame is reached).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.fps: float | None = None
        if not self.path.exists():
            raise FileNotFoundError(f"frames {self.path} not found (expected a folder of images or a video file)")
        self.is_video = not self.path.is_dir()
        if self.is_video:
            if self.path.suffix.lower() in IMAGE_SUFFIXES:
                read_image_size(self.path)  # not an image: Pillow's one-line error, not FFmpeg's log
            # FFmpeg's own log ("[mjpeg @ 0x...] ...") would repeat the one-line error; it is read
            # once per process, when OpenCV first opens a file with FFmpeg. A user's value wins.
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
            capture = cv2.VideoCapture(str(self.path))
            try:
                if not capture.isOpened():
                    raise ValueError(f"{self.path} is neither a folder nor a video OpenCV can open")
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise ValueError(f"video {self.path} has no readable frames")
                fps = capture.get(cv2.CAP_PROP_FPS)
                self.fps = float(fps) if fps and fps > 0 else None
                self.count_hint = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or None
            finally:
                capture.release()
            self._first = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            self.paths: list[Path] = []
        else:
            self.paths = sorted(list_images(self.path), key=frame_order)
            if not self.paths:
                raise FileNotFoundError(f"frames folder {self.path} contains no images")
            repeated = [stem for stem, n in Counter(p.stem for p in self.paths).items() if n > 1]
            if repeated:
                raise ValueError(f"frames folder {self.path} has several images named {repeated[0]}.* "
                                 "(outputs are named after the frame names)")
            self.count_hint = len(self.paths)
            self._first = read_image(self.paths[0])
            self._check_frame_sizes()

    def _check_frame_sizes(self) -> None:
        """Every frame of the folder readable and of the first frame's size, from the headers."""
        height, width = self._first.shape[:2]
        for path in self.paths[1:]:
            frame_height, frame_width = read_image_size(path)  # ImageReadError naming the file
            if (frame_height, frame_width) != (height, width):
                raise ValueError(f"frame {path} is {frame_width}x{frame_height} (WxH) but the first "
                                 f"frame {self.paths[0].name} is {width}x{height}; all frames must "
                                 "have the same size")

    @property
    def first_name(self) -> str:
        return self.paths[0].name if self.paths else f"{self.path.name} frame 0"

    def first_frame(self) -> np.ndarray:
        return self._first

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (output stem, (H, W, 3) RGB uint8) per frame, in order."""
        if not self.is_video:
            for path in self.paths:
                yield path.stem, read_image(path)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                yield f"{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()


def read_first_mask(path: str | os.PathLike, frame_size: tuple[int, int],
                    frame_name: str = "the first frame") -> tuple[np.ndarray, list[int]]:
    """Read the first-frame mask as ((H, W) uint8 object ids, 768-entry palette).

    A palette PNG whose indices include ids other than 0 and 255 is a label map (index = object
    id, 255 = DAVIS void, ignored) and keeps its palette; so is a greyscale PNG holding at least
    two ids other than 0 and 255 and at most :data:`MAX_GREY_IDS` distinct values (a mask with
    soft edges has many more). Any other image (0/255 or 0/1 PNG, a palette PNG holding only 0
    and 255, RGB) is ONE object, id 1. Label maps without a palette get the DAVIS palette.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"first-frame mask {path} not found")
    palette = read_palette(path)  # MaskReadError naming the file if it is not a readable image
    try:
        indices = read_label_map(path)  # palette or greyscale ids; colour images are refused
    except MaskReadError:
        indices = None
    height, width = frame_size
    values = np.unique(indices).tolist() if indices is not None else []
    ids = set(values) - {0, VOID_ID}
    grey_ids = palette is None and len(ids) >= 2 and len(values) <= MAX_GREY_IDS
    if ids and (palette is not None or grey_ids):  # a label map; a palette one keeps its colours
        labels = np.where(indices == VOID_ID, 0, indices).astype(np.uint8)
        palette = palette or voc_palette()
    else:  # one object
        labels = load_mask(path, allow_empty=True, allow_full=True).astype(np.uint8)
        palette = voc_palette()
    if labels.shape != (height, width):
        raise ValueError(f"first-frame mask {path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but "
                         f"{frame_name} is {width}x{height}")
    if not labels.any():
        raise ValueError(f"first-frame mask {path} is empty (no object pixels)")
    return labels, palette


def palette_colours(palette: list[int]) -> np.ndarray:
    """(256, 3) uint8 colours of a flat 768-entry palette."""
    return np.array(palette[:768], dtype=np.uint8).reshape(256, 3)


def overlay_frame(image: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 with each object id tinted and outlined in its palette colour."""
    ids = [int(i) for i in np.unique(labels) if i != 0]
    return draw_overlay(image, [labels == i for i in ids],
                        colours=[tuple(int(c) for c in colours[i]) for i in ids])


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".m4v")


def check_video_name(path: str | os.PathLike) -> None:
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"cannot write video {path} with the mp4v codec "
                         f"(use a {' or '.join(VIDEO_SUFFIXES)} name)")


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An mp4v writer for ``path`` (the temp file :func:`persam_files.atomic_write` gives)."""
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        writer.release()
        raise ValueError(f"cannot write video {path} with the mp4v codec")
    return writer


def add_track_args(parser: argparse.ArgumentParser) -> None:
    """The ``track`` options (shared with scripts/track_video.py)."""
    add_model_args(parser)
    parser.add_argument("--frames", required=True, metavar="DIR_OR_VIDEO",
                        help="folder of frame images (in name order, numbers by value: frame2 before "
                             "frame10) or a video file")
    parser.add_argument("--first-mask", required=True, metavar="PNG",
                        help="mask of the first frame: a palette or greyscale PNG of object ids "
                             "(DAVIS style, 255 = void) or a 0/255 (or 0/1) PNG for one object")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for one palette PNG of object ids per frame")
    parser.add_argument("--video", metavar="FILE", help="also write an overlay video (mp4v) to FILE")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"overlay video frame rate (default: the input video's, else {DEFAULT_FPS:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "track", help="segment the objects of a first-frame mask in every frame of a video",
        description="Personalized video object segmentation: the first frame's mask (one id per object) "
                    "is the only supervision; writes a palette PNG of object ids per frame.")
    add_track_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check inputs, load SAM, track every frame, write PNGs (and the overlay video)."""
    from tqdm import tqdm

    from ..video import Tracker

    # Every input is checked before the model is loaded or anything is written.
    source = FrameSource(args.frames)
    first = source.first_frame()
    size = (int(first.shape[0]), int(first.shape[1]))
    labels, palette = read_first_mask(args.first_mask, size, frame_name=f"frame {source.first_name}")
    out = check_output_dir(args.out, inputs=[("--frames", args.frames)])  # created by the first label map
    if args.fps is not None and args.fps <= 0:
        raise ValueError("--fps must be positive")

    if args.video:
        check_output_file(args.video, "--video", inputs=[("--frames", args.frames), ("--first-mask", args.first_mask)])
        check_video_name(args.video)
    fit_steps = check_fit_steps(args)

    tracker = Tracker(load_sam(args), method=args.method, fit_steps=fit_steps)
    colours = palette_colours(palette)
    current: dict = {}

    def frames() -> Iterator[np.ndarray]:  # remember the frame track() is on: its name and pixels
        for name, image in source:
            if tuple(image.shape[:2]) != size:
                raise ValueError(f"frame {name} of {source.path} is {image.shape[1]}x{image.shape[0]} "
                                 f"(WxH) but the first frame is {size[1]}x{size[0]}")
            current.update(name=name, image=image)
            yield image

    def track_all(video_path: Path | None) -> int:
        video = open_video_writer(video_path, args.fps or source.fps or DEFAULT_FPS, size) if video_path else None
        written = 0
        try:
            with tqdm(total=source.count_hint, unit="frame", desc="track", disable=not show_progress(args),
                      file=sys.stderr, dynamic_ncols=True) as bar:
                # Tracker.track yields the given first label map, then one label map per later frame.
                for result in tracker.track(frames(), labels):
                    save_label_png(out / f"{current['name']}.png", result, palette)
                    if video is not None:
                        video.write(cv2.cvtColor(overlay_frame(current["image"], result, colours),
                                                 cv2.COLOR_RGB2BGR))
                    written += 1
                    bar.update(1)
        finally:
            if video is not None:
                video.release()
        return written

    if args.video:  # the video goes to a temp file renamed into place only when complete
        counts: list[int] = []
        atomic_write(args.video, lambda temp: counts.append(track_all(temp)))
        written = counts[0]
    else:
        written = track_all(None)
    print(f"wrote {plural(written, 'label map')} ({plural(len(tracker.objects), 'object')}: ids "
          f"{', '.join(map(str, tracker.object_ids))}) to {out}"
          + (f" and the overlay video {args.video}" if args.video else ""))
    return 0
