#!/usr/bin/env python
"""Track the objects of a first-frame mask through a video: ``persam track`` as a script.

    python scripts/track_video.py --checkpoint mobile_sam.pt --frames clip.mp4 \\
        --first-mask clip_00000.png --out masks/ --video overlay.mp4

The same options and behaviour as ``persam track`` (this script only calls it). From Python,
use ``persam.Tracker`` directly: ``for labels in Tracker(sam).track(frames, first_labels): ...``.
"""
from __future__ import annotations

import sys

from persam.cli import main

if __name__ == "__main__":
    sys.exit(main(["track", *sys.argv[1:]]))
