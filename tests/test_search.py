"""persam search (README 'Album search') on a generated album: nested folders, corrupt files, a
non-image file, two concepts, a tiny random ViT checkpoint.

One uninterrupted run (with --index) is the baseline every other run is compared with, row for
row: a run stopped by SIGINT then SIGKILL and resumed, a run whose last line was torn, a run on
a local Ray, and a search for a new concept that must not call the encoder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from persam import PerSAM, build_sam
from persam.cli import main as cli
from persam.search import (ERRORS_FILE, HTML_FILE, RESULTS_FILE, SUMMARY_FILE, EmbeddingIndex,
                           SearchError, image_content_key, read_jsonl, search, to_storage_precision)
from parity import save_random_checkpoint

# The smallest encoder of the parity fixtures: the album's cost is the 1024x1024 encoder pass.
TINY_VIT = dict(embed_dim=64, depth=2, num_heads=4, global_attn_indexes=(1,))
BATCH = 4
RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 200, 60)


def _picture(rng, height, width, squares):
    image = (rng.random((height, width, 3)) * 80 + 90).astype(np.uint8)
    for colour, (y, x, size) in squares:
        image[y:y + size, x:x + size] = colour
    return image


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    """27 files: 24 images in nested folders (png and jpg, sizes 40-96 px, red and/or blue
    squares or neither), 2 corrupt images, 1 empty .png, and a text file that is not searched."""
    root = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(7)
    folders = ["", "2019", "2019/summer", "2020", "misc/deep/er"]
    for index in range(24):
        height, width = int(rng.integers(40, 97)), int(rng.integers(40, 97))
        squares = []
        if index % 3 != 2:
            squares.append((RED, (int(rng.integers(0, height - 16)), int(rng.integers(0, width - 16)), 16)))
        if index % 4 == 0:
            squares.append((BLUE, (2, 2, 12)))
        folder = root / folders[index % len(folders)]
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if index % 2 else ".png"
        Image.fromarray(_picture(rng, height, width, squares)).save(folder / f"photo_{index:02d}{suffix}")
    good = (root / "2019" / "photo_01.jpg").read_bytes()
    (root / "2019" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "2020" / "text_as.png").write_bytes(b"this is not a png\n")
    (root / "misc" / "empty.png").write_bytes(b"")
    (root / "misc" / "notes.txt").write_text("not an image; never listed\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_vit.pth"
    save_random_checkpoint("vit_b", path, seed=2, **TINY_VIT)
    return path


@pytest.fixture(scope="module")
def persam(checkpoint):
    return PerSAM(build_sam("auto", checkpoint), cache_size=0)


@pytest.fixture(scope="module")
def concepts(persam, tmp_path_factory):
    """red.pt and blue.pt (the album's two concepts) and green.pt (the 'new concept')."""
    folder = tmp_path_factory.mktemp("concepts")
    rng = np.random.default_rng(3)
    paths = {}
    for name, colour in (("red", RED), ("blue", BLUE), ("green", GREEN)):
        image = _picture(rng, 64, 64, [(colour, (20, 20, 24))])
        mask = np.zeros((64, 64), bool)
        mask[20:44, 20:44] = True
        paths[name] = persam.learn(image, mask, name=name).save(folder / f"{name}.pt")
    return paths


# Random weights score far below find's default threshold: a low one gives the album hits to write.
THRESHOLD = 0.05


def search_args(album, concepts, out, *extra):
    return ["search", str(album), "--concept", str(concepts["red"]), "--concept", str(concepts["blue"]),
            "--out", str(out), "--batch", str(BATCH), "--threshold", str(THRESHOLD), "--no-progress", *extra]


@pytest.fixture(scope="module")
def baseline(album, concepts, checkpoint, tmp_path_factory):
    """One uninterrupted command-line run with an index (every later run is compared with it)."""
    base = tmp_path_factory.mktemp("baseline")
    out, index = base / "out", base / "index"
    assert cli(search_args(album, concepts, out, "--checkpoint", str(checkpoint), "--index", str(index))) == 0
    return out, index


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_baseline_rows_errors_and_summary(baseline, album):
    out, _ = baseline
    rows = [json.loads(line) for line in lines(out / RESULTS_FILE)]
    errors = [json.loads(line) for line in lines(out / ERRORS_FILE)]
    images = sorted(str(p) for p in album.rglob("photo_*"))
    assert [row["image"] for row in rows] == images  # every image once, sorted by path
    assert sorted(e["image"] for e in errors) == sorted(
        str(album / p) for p in ("2019/truncated.jpg", "2020/text_as.png", "misc/empty.png"))
    assert all("\n" not in e["error"] and e["image"] in e["error"] for e in errors)
    assert not any("notes.txt" in line for line in lines(out / RESULTS_FILE) + lines(out / ERRORS_FILE))
    for row in rows:
        with Image.open(row["image"]) as image:
            assert (row["width"], row["height"]) == image.size
        assert row["size"] == os.stat(row["image"]).st_size
        assert set(row["concepts"]) == {"red", "blue"}
        for entry in row["concepts"].values():
            assert entry["present"] == bool(entry["instances"])
            scores = [i["score"] for i in entry["instances"]]
            assert scores == sorted(scores, reverse=True)
            for instance in entry["instances"]:
                x0, y0, x1, y1 = instance["box"]
                assert 0 <= x0 <= x1 < row["width"] and 0 <= y0 <= y1 < row["height"]
                assert instance["area"] > 0
    hits = {name: sum(row["concepts"][name]["present"] for row in rows) for name in ("red", "blue")}
    assert sum(hits.values()) > 0, "random weights should still give some hits"
    assert (out / SUMMARY_FILE).read_text() == (
        f"concept,images,hits\nred,{len(rows)},{hits['red']}\nblue,{len(rows)},{hits['blue']}\n")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and not attrs["href"].startswith("#"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_contact_sheet_links_resolve_and_hits_are_best_first(baseline):
    out, _ = baseline
    page = _Links()
    page.feed((out / HTML_FILE).read_text())
    assert page.images, "the contact sheet shows the hits"
    for target in page.links + page.images:
        assert not target.startswith(("/", "http:", "https:", "file:")), target
        assert (out / unquote(target)).resolve().is_file(), target
    rows = [json.loads(line) for line in lines(out / RESULTS_FILE)]
    expected = []
    for name in ("red", "blue"):
        hits = [r for r in rows if r["concepts"][name]["present"]]
        hits.sort(key=lambda r: (-r["concepts"][name]["score"], r["image"]))
        expected += [r["concepts"][name]["thumbnail"] for r in hits]
    assert [unquote(src) for src in page.images] == expected
    with Image.open(out / expected[0]) as thumb:
        assert max(thumb.size) <= 256 and thumb.format == "JPEG"


def _wait_for_rows(path: Path, count: int, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {count} rows in {path} after {timeout} s")


def test_interrupted_then_killed_then_resumed_equals_uninterrupted(baseline, album, concepts, checkpoint,
                                                                   tmp_path):
    """SIGINT after the first batch (clean stop, exit 130), then SIGKILL of the resumed run after
    its next batch, then a resume to the end: the same rows, errors and files as one run."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "persam"] + search_args(album, concepts, out, "--checkpoint", str(checkpoint))
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(out / RESULTS_FILE, 1, first)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr and "Traceback" not in stderr
    done = len(read_jsonl(out / RESULTS_FILE)) + len(read_jsonl(out / ERRORS_FILE))
    assert 0 < done < 27

    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_rows(out / RESULTS_FILE, len(read_jsonl(out / RESULTS_FILE)) + 1, second)
    second.kill()
    second.wait()
    done_after_kill = len(read_jsonl(out / RESULTS_FILE)) + len(read_jsonl(out / ERRORS_FILE))
    assert done < done_after_kill < 27, "the kill should land mid-run"

    assert cli(search_args(album, concepts, out, "--checkpoint", str(checkpoint))) == 0
    base, _ = baseline
    assert lines(out / RESULTS_FILE) == lines(base / RESULTS_FILE)
    assert lines(out / ERRORS_FILE) == lines(base / ERRORS_FILE)
    assert (out / SUMMARY_FILE).read_text() == (base / SUMMARY_FILE).read_text()
    assert (out / HTML_FILE).read_text() == (base / HTML_FILE).read_text()
    thumbs = sorted(p.relative_to(out) for p in (out / "thumbs").rglob("*") if p.is_file())
    assert thumbs == sorted(p.relative_to(base) for p in (base / "thumbs").rglob("*") if p.is_file())
    assert not list(out.rglob(".*tmp*")), "no temp files left behind"


def test_torn_last_line_is_dropped_and_redone(baseline, album, concepts, persam, tmp_path):
    base, index = baseline
    out = tmp_path / "out"
    shutil.copytree(base, out)
    data = (out / RESULTS_FILE).read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    (out / RESULTS_FILE).write_bytes(data[: last_start + 40])  # a kill in the middle of the last row
    calls = _count_encoder_calls(persam)
    try:
        summary = search([album], {"red": _load(concepts["red"]), "blue": _load(concepts["blue"])}, out,
                         persam=persam, batch_size=BATCH, threshold=THRESHOLD, progress=False)
    finally:
        del persam.engine.encode_batch
    assert (summary.skipped, summary.encoded) == (26, 1) and len(calls) == 1
    assert lines(out / RESULTS_FILE) == lines(base / RESULTS_FILE)


def _load(path):
    from persam import Concept
    return Concept.load(path)


def _count_encoder_calls(persam) -> list[int]:
    """Wraps the engine's batch encoder (the one every search encode goes through)."""
    calls: list[int] = []
    original = type(persam.engine).encode_batch

    def counting(images):
        calls.append(len(images))
        return original(persam.engine, images)

    persam.engine.encode_batch = counting
    return calls


def test_new_concept_with_index_does_not_encode(baseline, album, concepts, persam, tmp_path):
    base, index = baseline
    calls = _count_encoder_calls(persam)
    try:
        summary = search([album], [concepts["green"], concepts["red"]], tmp_path / "out", persam=persam,
                         index=index, batch_size=BATCH, threshold=THRESHOLD, progress=False)
    finally:
        del persam.engine.encode_batch
    assert calls == [] and summary.encoded == 0 and summary.index_hits == 24
    # The red concept's rows equal the baseline's: index entries give the same embeddings.
    new = [json.loads(line)["concepts"]["red"] for line in lines(tmp_path / "out" / RESULTS_FILE)]
    old = [json.loads(line)["concepts"]["red"] for line in lines(base / RESULTS_FILE)]
    assert new == old
    entries = list(Path(index).rglob("*.pt"))
    assert len(entries) == 24 and all(2_000_000 < e.stat().st_size < 2_200_000 for e in entries)


def test_index_entries_are_fp16_and_corrupt_entries_fall_back(persam, album, tmp_path):
    image = np.asarray(Image.open(album / "photo_00.png").convert("RGB"))
    embedding = persam.engine.encode(image)
    index = EmbeddingIndex(tmp_path, persam.fingerprint)
    key = image_content_key(image)
    index.put(key, embedding)
    stored = torch.load(index.path(key), weights_only=True)
    assert stored["features"].dtype == torch.float16
    loaded = index.get(key, image.shape[:2])
    torch.testing.assert_close(loaded.features, to_storage_precision(embedding.features), rtol=0, atol=0)
    assert index.get(key, (image.shape[0] + 1, image.shape[1])) is None  # another image's size
    index.path(key).write_bytes(index.path(key).read_bytes()[:1000])  # torn entry
    assert index.get(key, image.shape[:2]) is None
    assert index.get("0" * 64, image.shape[:2]) is None


def test_fp16_embeddings_give_the_same_masks(persam, album, concepts):
    """Masks decoded from fp16-rounded features against fp32 ones: IoU >= 0.99 wherever the
    location prior picks the same prompt points. With random weights the similarity map is
    flat enough that its argmin (the negative point) can flip on a near-tie (1 image of 6 here,
    IoU 0.91); that is the whole of the fp16 difference, so it is counted, not hidden."""
    from persam import Concept

    concept = Concept.load(concepts["red"])
    same_prompts, ious = 0, []
    for path in sorted(album.rglob("photo_0[0-5].*")):
        embedding = persam.embed(str(path))[1]
        rounded = type(embedding)(to_storage_precision(embedding.features), embedding.input_size,
                                  embedding.original_size)
        full = persam.segment_embedding(embedding, concept)
        half = persam.segment_embedding(rounded, concept)
        assert 0 < full.mask.sum() < full.mask.size, "a trivial mask would prove nothing"
        iou = (full.mask & half.mask).sum() / (full.mask | half.mask).sum()
        ious.append(iou)
        if np.array_equal(full.points, half.points):
            same_prompts += 1
            assert iou >= 0.99, (path, iou)
    assert same_prompts >= 4, ious
    assert np.mean(ious) >= 0.95, ious


def test_ray_gives_the_same_rows(baseline, album, concepts, checkpoint, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 1024 * 1024)
    try:
        summary = search([album], [concepts["red"], concepts["blue"]], tmp_path / "out", checkpoint=checkpoint,
                         ray=True, ray_actors=2, ray_cpus=1, batch_size=BATCH, threshold=THRESHOLD,
                         progress=False)
    finally:
        ray.shutdown()
    base, _ = baseline
    assert summary.images == 24 and summary.errors == 3
    # The actors run torch with 1 thread (their CPU), the baseline with torch's default: the
    # decoder's sums then differ in the 7th digit, which can move a score's 6th decimal. With
    # equal thread counts the files are identical (scripts/bench_search.py checks that).
    ray_rows = [json.loads(line) for line in lines(tmp_path / "out" / RESULTS_FILE)]
    base_rows = [json.loads(line) for line in lines(base / RESULTS_FILE)]
    assert _same(ray_rows, base_rows, tolerance=0 if torch.get_num_threads() == 1 else 2e-6)
    assert lines(tmp_path / "out" / ERRORS_FILE) == lines(base / ERRORS_FILE)
    thumbs = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out" / "thumbs").rglob("*.jpg"))
    assert thumbs == sorted(p.relative_to(base) for p in (base / "thumbs").rglob("*.jpg"))


def _same(a, b, tolerance: float) -> bool:
    """Equal JSON values, floats within ``tolerance``; everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def test_missing_ray_is_one_line(monkeypatch, album, concepts, checkpoint, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like
    status = cli(search_args(album, concepts, tmp_path / "out", "--checkpoint", str(checkpoint), "--ray"))
    err = capsys.readouterr().err
    assert status == 1 and err.strip() == 'persam search: error: Ray is not installed; pip install "persam[ray]"'


def test_bad_inputs_are_one_line_errors(album, concepts, checkpoint, tmp_path, capsys):
    status = cli(search_args(tmp_path / "nowhere", concepts, tmp_path / "out", "--checkpoint", str(checkpoint)))
    assert status == 1 and "nowhere not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    status = cli(search_args(tmp_path / "empty", concepts, tmp_path / "out", "--checkpoint", str(checkpoint)))
    assert status == 1 and "no images" in capsys.readouterr().err
    with pytest.raises(SearchError, match="two concepts are named"):
        search([album], [concepts["red"], concepts["red"]], tmp_path / "out", checkpoint=checkpoint)
