#!/usr/bin/env python
"""Track the objects of a first-frame mask through a video with PerSAM / PerSAM-F.

The same job as ``persam track``, written out over the Python API (``persam.Tracker``) as an
example to copy from::

    python scripts/track_video.py --checkpoint mobile_sam.pt --frames clip.mp4 \\
        --first-mask clip_00000.png --out masks/ --video overlay.mp4

Inputs: ``--frames`` is a folder of images (sorted by name) or a video file; ``--first-mask``
a palette PNG of object ids (DAVIS style, 255 = void) or a 0/255 PNG for a single object, the
size of the frames. Outputs: one palette PNG of object ids per frame in ``--out`` (named after
the frame files, or 00000.png, ... for a video), and with ``--video`` an overlay video.
Every input is checked before the model is loaded; every file is written via temp + rename.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from persam.commands.track import add_track_args

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python scripts/track_video.py --checkpoint mobile_sam.pt --frames clip.mp4 "
               "--first-mask first.png --out masks/ --video overlay.mp4",
    )
    add_track_args(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser.parse_args(argv)


def track_video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from persam import Tracker
    from persam.commands.common import load_sam
    from persam.commands.track import (DEFAULT_FPS, FrameSource, OverlayVideoWriter, overlay_frame,
                                       palette_colours, read_first_mask)
    from persam.io import save_label_png

    source = FrameSource(args.frames)  # folder or video; raises on missing / empty input
    first = source.first_frame()
    size = first.shape[:2]
    first_labels, palette = read_first_mask(args.first_mask, size, frame_name=source.first_name)
    out = Path(args.out)

    tracker = Tracker(load_sam(args), method=args.method)
    out.mkdir(parents=True, exist_ok=True)
    colours = palette_colours(palette)
    video = OverlayVideoWriter(args.video, args.fps or source.fps or DEFAULT_FPS, size) if args.video else None
    current: dict = {}

    def frames():  # remember which frame track() is on, for its name and the overlay
        for name, image in source:
            current.update(name=name, image=image)
            yield image

    try:
        # track() yields the given first label map, then one label map per later frame.
        for labels in tqdm(tracker.track(frames(), first_labels), total=source.count_hint,
                           unit="frame", disable=args.no_progress):
            save_label_png(out / f"{current['name']}.png", labels, palette)
            if video is not None:
                video.write(overlay_frame(current["image"], labels, colours))
        if video is not None:
            video.close()
            video = None
    finally:
        if video is not None:
            video.abort()
    print(f"objects {tracker.object_ids}: label maps in {out}" + (f", overlay {args.video}" if args.video else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return track_video(args)
    except Exception as exc:  # one line for users, the traceback with --debug
        if args.debug:
            raise
        print(f"track_video: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
