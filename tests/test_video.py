"""Video tracking (docs/method.md 6): the Tracker, ``persam track``, ``persam davis`` and its resume.

Two kinds of engines:

* ``ColourEngine`` - a stand-in for SAM that "segments" the colour under the first prompt
  point and whose features are colour histograms per 16x16 cell. With it the similarity
  prior finds each object, so these tests can check that the tracker follows moving,
  occluded, leaving and returning objects under their own ids, and the exact prompts it builds.
* a real SAM with seeded random weights and a reduced ViT (loaded from a checkpoint file
  through ``build_sam``): masks are meaningless, so those tests check the machinery - files,
  names, palettes, sizes, id sets, the overlay video, one encoder pass per frame.
"""
from __future__ import annotations

import json
import runpy
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from persam.cli import main
from persam_files import voc_palette
from persam.masks import mask_box
from persam.prior import mask_to_feature_grid
from persam.video import (Tracker, compose_label_map, expand_box,
                          largest_mask_index, object_ids, top_k_points, video_target_grid)
from sam_core import Decoded, ImageEmbedding, SamEngine, load_image
from sam_core.transforms import IMAGE_SIZE, resize_uint8, resized_shape

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
HEIGHT, WIDTH = 96, 128

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tests run many small tensor ops; on a busy 2-core machine one thread is several
    times faster than two (no intra-op synchronisation), so use one here and restore after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- stand-in SAM
def colour_classes(rgb: np.ndarray) -> np.ndarray:
    """(H, W) class per pixel: bit 0 red, bit 1 green, bit 2 blue (> 127); 0 = black."""
    bits = (rgb > 127).astype(np.int64)
    return bits[..., 0] + 2 * bits[..., 1] + 4 * bits[..., 2]


class FakeSam(torch.nn.Module):
    """Just enough of a Sam for the engine, the tracker and model_fingerprint."""

    model_type = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = torch.nn.Identity()  # called once per encode: forward hooks count it


@dataclass(frozen=True)
class ColourEmbedding(ImageEmbedding):
    classes: np.ndarray | None = None  # (H, W) colour class of every original pixel


class ColourEngine(SamEngine):
    """SAM stand-in. Features: per 16x16 cell of the padded 1024 frame, the fraction of each
    colour class (channels 1-7; padding in channel 8) plus a constant in channel 255. Decoding:
    the pixels with the colour of the first prompt point (nothing for black), as three equal
    masks; every call's prompts are recorded in ``decode_calls``."""

    def __init__(self) -> None:  # no real model: SamEngine.__init__ is not called
        self.sam = FakeSam()
        self._dense_pe = None
        self.encode_calls = 0
        self.decode_calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, image) -> ColourEmbedding:
        array = load_image(image)
        self.encode_calls += 1
        resized = colour_classes(resize_uint8(array))
        cells = np.full((IMAGE_SIZE, IMAGE_SIZE), 8, np.int64)  # padding: class 8
        cells[: resized.shape[0], : resized.shape[1]] = resized
        cells = torch.from_numpy(cells[: -(-resized.shape[0] // 16) * 16, : -(-resized.shape[1] // 16) * 16])
        fractions = torch.zeros(9, 64, 64)
        fractions[8] = 1.0
        for colour in range(1, 9):
            pooled = F.avg_pool2d((cells == colour).float()[None], 16)[0]
            fractions[colour, : pooled.shape[0], : pooled.shape[1]] = pooled
        features = torch.zeros(1, 256, 64, 64)
        # Black counts in no channel, so where no cell has an object's colour the best match
        # is a pure black cell (the constant channel alone) and the stand-in finds nothing.
        features[0, 1:9] = fractions[1:]
        features[:, 255] = 0.05
        features = self.sam.image_encoder(features)
        return ColourEmbedding(features, resized_shape(array.shape[:2]), tuple(array.shape[:2]),
                               classes=colour_classes(array))

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None, multimask=True,
               attn_sim=None, target_embedding=None, high_res=True) -> Decoded:
        points = np.asarray(points).reshape(-1, 2)
        self.decode_calls.append({"points": points.copy(), "labels": np.asarray(labels).copy(),
                                  "box": None if box is None else np.asarray(box).copy(),
                                  "mask_input": mask_input is not None, "multimask": multimask})
        x, y = (int(v) for v in points[0])
        colour = embedding.classes[y, x]
        mask = (embedding.classes == colour) if colour != 0 else np.zeros_like(embedding.classes, bool)
        # The mask as SAM-style low-res logits: resized to the input size / 4, padded to 256.
        low_size = (-(-embedding.input_size[0] // 4), -(-embedding.input_size[1] // 4))
        value = F.interpolate(torch.from_numpy(mask).float()[None, None], low_size, mode="bilinear")
        value = F.pad(value, (0, 256 - low_size[1], 0, 256 - low_size[0]))
        low = (value[0] - 0.5) * 20
        count = 3 if multimask else 1
        low = low.repeat(count, 1, 1)
        scores = torch.tensor([0.7, 0.9, 0.8])[:count]
        return Decoded(self.upsample(embedding, low) if high_res else None, scores, low)


# ----------------------------------------------------------------------------- synthetic videos
def draw_scene(t: int, objects: tuple[int, ...] = (2, 5, 9)) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of the test video (RGB (H, W, 3), label map (H, W)).

    id 2: red square moving right; id 5: green disc moving down, partly hidden by a white
    bar at t = 3, 4; id 9: blue bar that leaves the frame at t = 3, 4 and comes back elsewhere.
    Only ids in ``objects`` are drawn. The top-left corner is always background.
    """
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    if 2 in objects:
        x = 8 + 6 * t
        image[10:26, x:x + 16] = RED
        labels[10:26, x:x + 16] = 2
    if 5 in objects:
        yy, xx = np.mgrid[:HEIGHT, :WIDTH]
        disc = (yy - (40 + 4 * t)) ** 2 + (xx - 90) ** 2 <= 10 ** 2
        image[disc] = GREEN
        labels[disc] = 5
    if 9 in objects and t not in (3, 4):
        x = 20 if t < 3 else 60
        image[60:74, x:x + 20] = BLUE
        labels[60:74, x:x + 20] = 9
    if t in (3, 4):  # occluder over the top of the disc
        image[30:40 + 4 * t, 75:105] = WHITE
        labels[30:40 + 4 * t, 75:105] = 0
    return image, labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


# ----------------------------------------------------------------------------- pure helpers
def test_object_ids_and_expand_box():
    assert object_ids(np.array([[0, 3], [7, 3]])) == [3, 7]
    box, centre = expand_box(np.array([30, 40, 50, 60]), 10, (96, 128))
    assert box.tolist() == [20, 30, 60, 70] and centre.tolist() == [40, 50]
    # Clipped at the border; the far edges clip to W and H (the paper's convention).
    box, centre = expand_box(np.array([5, 3, 120, 90]), 10, (96, 128))
    assert box.tolist() == [0, 0, 128, 96] and centre.tolist() == [64, 48]


def test_top_k_points_order_and_ties():
    sim = torch.zeros(4, 5)
    sim[2, 3] = 5.0
    sim[1, 4] = 4.0
    assert top_k_points(sim, 2).tolist() == [[3, 2], [4, 1]]
    flat = torch.ones(3, 3)  # all tied: first pixels in row-major order
    assert top_k_points(flat, 2).tolist() == [[0, 0], [1, 0]]


def test_largest_mask_and_label_composition():
    logits = torch.full((3, 4, 4), -1.0)
    logits[0, :1, :1] = 1
    logits[1, :3, :3] = 1  # 9 pixels: the largest
    logits[2, :2, :] = 1  # 8 pixels
    assert largest_mask_index(logits) == 1
    first = torch.tensor([[2.0, 2.0], [-1.0, 0.0]])
    second = torch.tensor([[1.0, 3.0], [0.5, 0.0]])
    labels = compose_label_map([first, second, None], [3, 7, 9], (2, 2))
    # Higher logit wins, a logit of 0 does not beat the background, None never wins.
    assert labels.dtype == np.uint8 and labels.tolist() == [[3, 7], [7, 0]]


def test_video_target_grid_small_object_fallback():
    big = np.zeros((480, 640), bool)
    big[103:297, 105:295] = True  # cell edges fall inside the object
    grid, fallback = video_target_grid(big)
    assert not fallback and torch.equal(grid, mask_to_feature_grid(big, 215))
    assert int(grid.sum()) > 300
    tiny = np.zeros((480, 640), bool)
    tiny[200:203, 300:303] = True  # far less than a 16x16 cell of the 1024 frame
    grid, fallback = video_target_grid(tiny)
    rows, cols = torch.nonzero(grid, as_tuple=True)
    # Pixel centres (y + 0.5, x + 0.5) * 1.6 (the 1024 / 640 resize) / 16 px per cell.
    assert fallback and rows.tolist() == [20] and cols.tolist() == [30]


# ----------------------------------------------------------------------------- tracker (stand-in)
@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_tracker_follows_objects_and_keeps_ids(method):
    scenes = [draw_scene(t) for t in range(8)]
    engine = ColourEngine()
    tracker = Tracker(engine, method=method, fit_steps=5)
    outputs = []
    boxes_before = []  # each object's box as the tracker held it before each step
    for t, (image, truth) in enumerate(scenes):
        if t == 0:
            tracker.start(image, truth)
            outputs.append(truth)
            continue
        boxes_before.append({obj.object_id: obj.box.copy() for obj in tracker.objects})
        calls_before = len(engine.decode_calls)
        labels = tracker.step(image)
        outputs.append(labels)
        assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint8
        assert set(object_ids(labels)) <= {2, 5, 9}  # no id that frame 0 did not have
        assert set(object_ids(labels)) == set(object_ids(truth))  # absent objects stay absent
        for object_id in object_ids(truth):
            assert iou(labels == object_id, truth == object_id) > 0.85, (t, object_id)
        # Three decodes per object found; for one not found the cascade stops early (no mask,
        # so no box: PerSAM after step 2, PerSAM-F right after its weighted first decode).
        calls = engine.decode_calls[calls_before:]
        absent = 3 - len(object_ids(truth))
        assert len(calls) == 3 * len(object_ids(truth)) + (2 if method == "persam" else 1) * absent
        # Each object's first decode (the only one without mask input), in id order: top-2 +
        # the centre of its previous box expanded by 10 px, that box as box prompt, all positive.
        firsts = [call for call in calls if not call["mask_input"]]
        assert len(firsts) == 3
        for first, object_id in zip(firsts, (2, 5, 9)):
            box, centre = expand_box(boxes_before[-1][object_id], 10, (HEIGHT, WIDTH))
            assert first["box"].tolist() == box.tolist()
            assert first["points"].shape == (3, 2) and first["points"][2].tolist() == centre.tolist()
            assert first["labels"].tolist() == [1, 1, 1] and first["multimask"]
            assert truth[tuple(first["points"][0][::-1])] in (object_id, 0)
    # id 9 vanished at t = 3, 4: its box stayed the one of t = 2, and it came back as 9.
    assert boxes_before[3][9].tolist() == boxes_before[2][9].tolist() == boxes_before[4][9].tolist()
    assert boxes_before[2][9].tolist() == mask_box(outputs[2] == 9).tolist()
    assert 9 in object_ids(outputs[5]) and 9 in object_ids(outputs[7])


def test_tracker_non_contiguous_ids_and_track_iterator():
    scenes = [draw_scene(t, objects=(2, 9)) for t in range(3)]
    tracker = Tracker(ColourEngine())
    first_labels = scenes[0][1]
    outputs = list(tracker.track((image for image, _ in scenes), first_labels))
    assert len(outputs) == 3
    assert np.array_equal(outputs[0], first_labels)  # the given map comes back first
    assert tracker.object_ids == [2, 9]
    for (_, truth), labels in zip(scenes[1:], outputs[1:]):
        assert object_ids(labels) == [2, 9]  # not renumbered to 1, 2
        assert iou(labels == 9, truth == 9) > 0.85


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_one_encoder_pass_per_frame_whatever_the_object_count(method):
    counts = {}
    for objects in ((2,), (2, 5, 9)):
        engine = ColourEngine()
        forward_calls = []
        engine.sam.image_encoder.register_forward_hook(lambda *_: forward_calls.append(1))
        frames = [draw_scene(t, objects) for t in range(3)]  # every object visible throughout
        list(Tracker(engine, method=method, fit_steps=5).track([f for f, _ in frames], frames[0][1]))
        counts[len(objects)] = (engine.encode_calls, len(forward_calls), len(engine.decode_calls))
    fit_decodes = 1 if method == "persam-f" else 0  # per object, on frame 0
    assert counts[1] == (3, 3, 2 * 3 + fit_decodes)
    assert counts[3] == (3, 3, 2 * 3 * 3 + 3 * fit_decodes)


def test_benchmark_reports_stages_per_frame():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from bench_video import benchmark_tracking  # a benchmark harness: lives in scripts/
    finally:
        sys.path.remove(str(REPO / "scripts"))
    frames = [draw_scene(t)[0] for t in range(3)]
    first = draw_scene(0)[1]
    one = benchmark_tracking(ColourEngine(), frames, np.where(first == 2, 2, 0))
    three = benchmark_tracking(ColourEngine(), frames, first)
    assert (one["objects"], three["objects"]) == (1, 3)
    assert one["encoder_calls_per_frame"] == three["encoder_calls_per_frame"] == 1
    assert (one["decoder_calls_per_frame"], three["decoder_calls_per_frame"]) == (3, 9)
    stages = {"encode_s", "decode_s", "prior_s", "compose_s", "total_s", "frames_per_s"}
    assert stages <= set(one) and stages <= set(three)


def test_tracker_input_errors():
    image, labels = draw_scene(0)
    tracker = Tracker(ColourEngine())
    with pytest.raises(RuntimeError, match="start"):
        tracker.step(image)
    with pytest.raises(ValueError, match="no objects"):
        tracker.start(image, np.zeros_like(labels))
    with pytest.raises(ValueError, match="128x96"):
        tracker.start(image, labels[:50])
    tracker.start(image, labels)
    with pytest.raises(ValueError, match="first frame"):
        tracker.step(image[:50])
    with pytest.raises(ValueError, match="method"):
        Tracker(ColourEngine(), method="sam2")


# ----------------------------------------------------------------------------- real SAM, CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from parity import save_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny_vit_b.pth"
    save_random_checkpoint("vit_b", path, seed=0, embed_dim=32, depth=1, num_heads=1,
                           global_attn_indexes=())
    return path


def count_encoder_passes(monkeypatch, module) -> list:
    """Wrap ``module.load_sam`` so every image-encoder forward of the loaded model is counted."""
    calls: list = []
    original = module.load_sam

    def load_and_count(args):
        sam = original(args)
        sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
        return sam

    monkeypatch.setattr(module, "load_sam", load_and_count)
    return calls


def read_png(path: Path) -> tuple[str, list[int], np.ndarray]:
    with Image.open(path) as image:
        return image.mode, image.getpalette(), np.array(image)


def test_track_folder_writes_palette_pngs_and_overlay(tmp_path, checkpoint, monkeypatch, capsys):
    import persam.commands.track as track_cmd

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    names = ["f_000", "f_001", "f_002"]
    for t, name in enumerate(names):
        Image.fromarray(draw_scene(t, objects=(2, 9))[0]).save(frames_dir / f"{name}.jpg", quality=95)
    first = draw_scene(0, objects=(2, 9))[1]
    save_palette_png(tmp_path / "first.png", first)
    encoder_passes = count_encoder_passes(monkeypatch, track_cmd)

    status = main(["track", "--checkpoint", str(checkpoint), "--frames", str(frames_dir),
                   "--first-mask", str(tmp_path / "first.png"), "--out", str(tmp_path / "out"),
                   "--video", str(tmp_path / "overlay.mp4"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert len(encoder_passes) == 3  # one per frame, for two objects
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"{name}.png" for name in names]  # no temp files left
    for index, name in enumerate(names):
        mode, palette, labels = read_png(tmp_path / "out" / f"{name}.png")
        assert mode == "P" and palette == voc_palette()
        assert labels.shape == (HEIGHT, WIDTH)
        assert set(object_ids(labels)) <= {2, 9}
        if index == 0:
            assert np.array_equal(labels, first)
    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    video.release()
    assert len(frames) == 3 and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert not list(tmp_path.glob(".overlay*"))  # the temp video was renamed


def test_track_video_file_with_binary_mask(tmp_path, checkpoint, capsys):
    video_path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for t in range(3):
        writer.write(cv2.cvtColor(draw_scene(t, objects=(5,))[0], cv2.COLOR_RGB2BGR))
    writer.release()
    mask = np.where(draw_scene(0, objects=(5,))[1] > 0, 255, 0).astype(np.uint8)
    Image.fromarray(mask, mode="L").save(tmp_path / "mask.png")

    status = main(["track", "--checkpoint", str(checkpoint), "--frames", str(video_path),
                   "--first-mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "out"),
                   "--no-progress"])
    assert status == 0, capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["00000.png", "00001.png", "00002.png"]
    for name in written:
        mode, palette, labels = read_png(tmp_path / "out" / name)
        assert mode == "P" and palette == voc_palette() and labels.shape == (HEIGHT, WIDTH)
        assert set(object_ids(labels)) <= {1}  # a 0/255 mask is object 1
    assert np.array_equal(read_png(tmp_path / "out" / "00000.png")[2], (mask > 0).astype(np.uint8))


def test_track_input_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    Image.fromarray(draw_scene(0)[0]).save(frames_dir / "00000.png")
    good_mask = tmp_path / "mask.png"
    save_palette_png(good_mask, draw_scene(0)[1])
    wrong_size = tmp_path / "small.png"
    save_palette_png(wrong_size, draw_scene(0)[1][:50])
    empty = tmp_path / "empty.png"
    save_palette_png(empty, np.zeros((HEIGHT, WIDTH), np.uint8))
    (tmp_path / "no_frames").mkdir()
    out = tmp_path / "out"
    # The checkpoint does not exist: inputs are checked before the model is loaded.
    cases = [
        (tmp_path / "missing", good_mask, "missing"),
        (tmp_path / "no_frames", good_mask, "no images"),
        (frames_dir, tmp_path / "nope.png", "nope.png"),
        (frames_dir, wrong_size, "128x96"),
        (frames_dir, empty, "empty"),
    ]
    for frames, mask, expected in cases:
        status = main(["track", "--checkpoint", str(tmp_path / "none.pth"), "--frames", str(frames),
                       "--first-mask", str(mask), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert status == 1 and len(err.splitlines()) == 1 and expected in err, err
        assert err.startswith("persam track: error:")
    assert not out.exists()


def test_track_video_script_help():
    with pytest.raises(SystemExit) as exit_info:
        sys_argv = sys.argv
        sys.argv = ["track_video.py", "--help"]
        try:
            runpy.run_path(str(REPO / "scripts" / "track_video.py"), run_name="__main__")
        finally:
            sys.argv = sys_argv
    assert exit_info.value.code == 0


# ----------------------------------------------------------------------------- DAVIS runner
def write_davis(root: Path, sequences: dict[str, tuple[int, ...]], frames: int = 3) -> None:
    """A DAVIS-2017 layout with JPEG frames and palette annotations of draw_scene videos."""
    for sequence, objects in sequences.items():
        for t in range(frames):
            image, labels = draw_scene(t, objects)
            # DAVIS ids are 1..N: renumber this sequence's objects in drawing order.
            renumbered = np.zeros_like(labels)
            for new_id, old_id in enumerate(objects, start=1):
                renumbered[labels == old_id] = new_id
            jpeg = root / "JPEGImages" / "480p" / sequence / f"{t:05d}.jpg"
            jpeg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(jpeg, quality=95)
            save_palette_png(root / "Annotations" / "480p" / sequence / f"{t:05d}.png", renumbered)
    split = root / "ImageSets" / "2017" / "val.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(sequences) + "\n")


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {repo!r})
import test_video
import persam.commands.davis as davis_cmd
from persam.cli import main
from persam.video import Tracker

davis_cmd.load_sam = lambda args: test_video.ColourEngine()
steps = [0]
original_step = Tracker.step

def step_then_die(self, frame):
    steps[0] += 1
    if steps[0] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real kill
    return original_step(self, frame)

Tracker.step = step_then_die
main({argv!r})
"""


def test_davis_resume_after_kill(tmp_path, monkeypatch, capsys):
    import persam.commands.davis as davis_cmd

    data, out = tmp_path / "davis", tmp_path / "results"
    write_davis(data, {"alpha": (2, 9), "beta": (5,)})
    argv = ["davis", "--data", str(data), "--set", "val", "--checkpoint", "unused.pth",
            "--out", str(out), "--no-progress"]
    # alpha has 2 steps (frames 1, 2); die inside beta's second step (beta frames 0, 1 written).
    script = KILLED_RUN.format(tests=str(TESTS_DIR), repo=str(TESTS_DIR.parent), kill_at=4, argv=argv)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "alpha" / ".done").is_file()
    assert not (out / "beta").exists()  # nothing half-written under the real name
    partial = out / ".beta.partial"
    assert sorted(p.name for p in partial.iterdir() if not p.name.startswith(".")) == ["00000.png", "00001.png"]
    alpha_files = {p.name: p.stat().st_mtime_ns for p in (out / "alpha").iterdir()}

    monkeypatch.setattr(davis_cmd, "load_sam", lambda args: ColourEngine())
    started = []
    original_start = Tracker.start

    def counting_start(self, frame, labels):
        started.append(1)
        return original_start(self, frame, labels)

    monkeypatch.setattr(Tracker, "start", counting_start)
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert len(started) == 1  # only beta was tracked again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "alpha").iterdir()} == alpha_files
    assert sorted(p.name for p in (out / "beta").iterdir()) == [".done", "00000.png", "00001.png", "00002.png"]
    assert not partial.exists()
    assert json.loads((out / "beta" / ".done").read_text())["frames"] == 3
    for sequence, ids in (("alpha", {1, 2}), ("beta", {1})):
        for path in (out / sequence).glob("*.png"):
            mode, palette, labels = read_png(path)
            assert mode == "P" and palette == voc_palette() and labels.shape == (HEIGHT, WIDTH)
            assert set(object_ids(labels)) <= ids
    # With a stand-in that segments colours exactly, the whole chain scores near perfect.
    assert "J&F-Mean" in captured.out
    table = (out / "global_results-val.csv").read_text().splitlines()
    j_mean = float(table[1].split(",")[table[0].split(",").index("J-Mean")])
    assert j_mean > 0.85

    # Results of another method are not reused.
    info = davis_cmd.run_info("persam-f", "fake", "x")
    assert not davis_cmd.sequence_complete(out / "beta", ["00000", "00001", "00002"], info)
