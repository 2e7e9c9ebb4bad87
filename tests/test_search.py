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
    """One uninterrupted command-line run with an index (every later run is compared with it).
    Exit status 1: three files could not be used (as segment/find do; README 'Album search')."""
    base = tmp_path_factory.mktemp("baseline")
    out, index = base / "out", base / "index"
    assert cli(search_args(album, concepts, out, "--checkpoint", str(checkpoint), "--index", str(index))) == 1
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

    assert cli(search_args(album, concepts, out, "--checkpoint", str(checkpoint))) == 1  # 3 unusable files
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
    # The files done before include the 3 unusable ones, and the line says so.
    assert "26 of them done before this run (23 searched, 3 could not be used)" in summary.text()
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


# -- what a new user met (README 'Album search'): refusals, reruns with other options or inputs ------


def _small_picture(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_picture(np.random.default_rng(seed), 32, 32, [])).save(path)
    return path


def test_inputs_that_would_share_outputs_or_sit_in_out_are_refused_first(concepts, tmp_path, capsys):
    """Refused before the model loads (the checkpoint does not exist) and before OUT exists,
    with segment/find's messages: a.jpg and a.png would both write thumbs/.../a.jpg and
    masks/.../a.png; an input folder inside --out would be emptied of its images."""
    _small_picture(tmp_path / "same" / "a.jpg", 1)
    _small_picture(tmp_path / "same" / "a.png", 2)
    missing = ["--checkpoint", str(tmp_path / "none.pth")]
    assert cli(search_args(tmp_path / "same", concepts, tmp_path / "out", *missing)) == 1
    err = capsys.readouterr().err.strip()
    assert "a.jpg" in err and "a.png" in err and "rename one" in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()

    album = tmp_path / "album"
    _small_picture(album / "sub" / "b.png", 3)
    assert cli(search_args(album / "sub", concepts, album, *missing)) == 1
    err = capsys.readouterr().err.strip()
    assert f"input folder {album / 'sub'} is inside --out {album}" in err and "no images" not in err, err
    assert cli(search_args(album, concepts, album, *missing)) == 1
    assert f"--out {album} is also an input folder" in capsys.readouterr().err
    assert sorted(p.name for p in album.rglob("*")) == ["b.png", "sub"]  # nothing written


def test_closed_ray_address_fails_at_once_in_one_line(album, concepts, tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    from persam.search_ray import ray_endpoint

    assert ray_endpoint("10.0.0.5") == ("10.0.0.5", 6379) and ray_endpoint("ray://h") == ("h", 10001)
    assert ray_endpoint("[::1]:7000") == ("::1", 7000) and ray_endpoint("auto") is None
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    status = cli(search_args(album, concepts, tmp_path / "out", "--checkpoint", str(tmp_path / "none.pth"),
                             "--ray", f"127.0.0.1:{port}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith(f"persam search: error: no Ray cluster answers at 127.0.0.1:{port}"), err
    assert time.monotonic() - start < 10 and not (tmp_path / "out").exists()


def _two_hits(baseline) -> list[str]:
    """Two images with a hit (names photo_NN are unique across the album)."""
    rows = [json.loads(line) for line in lines(baseline[0] / RESULTS_FILE)]
    hit = [row["image"] for row in rows if any(e["present"] for e in row["concepts"].values())]
    assert len(hit) >= 2
    return hit[:2]


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for top in ("thumbs", "masks", "overlays")
            for p in sorted((out / top).rglob("*")) if p.is_file()}


def test_rerun_with_masks_redoes_the_hits_and_without_them_takes_them_off(baseline, album, concepts, persam,
                                                                          tmp_path):
    """Adding --masks --overlay to a finished search redoes the hits (the rest stays done):
    the folder equals a fresh run with those options. Dropping them again takes the links off
    the rows and deletes the files: the folder equals the first run's."""
    _, index = baseline
    small = tmp_path / "small"
    small.mkdir()
    for path in _two_hits(baseline):  # copies: the same pixels, so the index spares the encoder
        shutil.copy(path, small / Path(path).name)
    red_blue = [concepts["red"], concepts["blue"]]
    common = dict(persam=persam, index=index, batch_size=BATCH, threshold=THRESHOLD, progress=False)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    search([small], red_blue, out, **common)
    plain_rows, plain_files = lines(out / RESULTS_FILE), _files(out)
    hits_now = sum(any(e["present"] for e in json.loads(row)["concepts"].values()) for row in plain_rows)
    assert not any(key.startswith(("masks/", "overlays/")) for key in plain_files)

    summary = search([small], red_blue, out, masks=True, overlays=True, **common)
    search([small], red_blue, fresh, masks=True, overlays=True, **common)
    assert summary.skipped == 2 - hits_now == 0 and summary.encoded == 0
    assert lines(out / RESULTS_FILE) == lines(fresh / RESULTS_FILE)
    assert _files(out) == _files(fresh)
    assert any(key.startswith("masks/") for key in _files(out))
    assert (out / HTML_FILE).read_text() == (fresh / HTML_FILE).read_text()

    summary = search([small], red_blue, out, **common)
    assert summary.skipped == 2  # nothing to decode again: the links come off the rows
    assert lines(out / RESULTS_FILE) == plain_rows and _files(out) == plain_files
    assert not (out / "masks").exists() and not (out / "overlays").exists()


def test_rerun_with_other_inputs_warns_and_leaves_no_orphans(baseline, album, concepts, checkpoint, tmp_path,
                                                             capsys):
    """A run with other inputs into a used --out drops the other images' rows with one warning
    line saying how many and why, and deletes their thumbnails; one photo given as a file keeps
    its name (photo_00), so its row is reused as it is."""
    base, index = baseline
    out = tmp_path / "out"
    shutil.copytree(base, out)
    photo = album / "photo_00.png"
    status = cli(search_args(photo, concepts, out, "--checkpoint", str(checkpoint), "--index", str(index)))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    warnings_ = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings_) == 1 and "results for 26 images that are not among this run's inputs" in warnings_[0]
    assert "1 of them done before this run" in captured.out
    rows = read_jsonl(out / RESULTS_FILE)
    assert [row["image"] for row in rows] == [str(photo)] and read_jsonl(out / ERRORS_FILE) == []
    kept = {entry["thumbnail"] for entry in rows[0]["concepts"].values() if entry["present"]}
    assert set(_files(out)) == kept
    assert all(any(p.iterdir()) for p in out.rglob("*") if p.is_dir()), "no empty folders left"


def test_stopped_before_the_first_result_leaves_nothing(album, concepts, persam, tmp_path):
    """Ctrl-C (a real KeyboardInterrupt in the main thread) during the first batch: no OUT, no
    empty results.jsonl / errors.jsonl (README: created when the first result is written)."""
    import _thread
    import threading

    from persam.search import SearchInterrupted

    out = tmp_path / "out"
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(SearchInterrupted) as stop:
            search([album], [concepts["red"]], out, persam=persam, batch_size=BATCH, progress=False)
    finally:
        timer.cancel()
    assert stop.value.summary.images == 0
    assert not out.exists()


def test_contact_sheet_counts_one_unreadable_file_in_the_singular(tmp_path):
    from persam.search import contact_sheet

    page = contact_sheet(tmp_path, [], [], [{"image": str(tmp_path / "x.jpg")}])
    assert "1 file could not be read" in page and "1 files" not in page
