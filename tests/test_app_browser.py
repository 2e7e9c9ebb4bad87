"""``persam app`` in a real browser (README 'Web page'): Chromium (Debian's package) driven by Playwright.

The app runs as ``python -m persam app`` on a free localhost port with the random vit_t
checkpoint. One browser context uploads a reference, clicks on the object, learns with PerSAM,
searches two photos and downloads the concept and the masks; a second context learns a
different concept (another photo, another name, PerSAM-F) at the same time, and each sees only
its own. No request may leave 127.0.0.1 (the page must work offline). A screenshot of the
finished page is saved to the test's temp folder and copied to /tmp/persam_app_screenshot.png.

Random weights: SAM's masks are noise, but for an 80x60 photo clicked in the middle the noise
covers enough 16x16 cells to learn from (a larger photo gives a mask too thin to learn).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from persam import Concept
from persam_files import read_mask, save_image, write_bytes

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PERSAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_COPY = Path("/tmp/persam_app_screenshot.png")
WAIT_MS = 180_000  # model steps on a busy 2-core machine
MAX_UPLOAD_MB = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(vit_t_checkpoint, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("app") / "server.log"
    log = open(log_path, "wb")  # the server's own console output, for failures
    server = subprocess.Popen([sys.executable, "-m", "persam", "app", "--checkpoint", str(vit_t_checkpoint),
                               "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"persam app exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"persam app did not listen on port {port}: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def photo(colour, flip: bool = False) -> np.ndarray:
    image = np.full((60, 80, 3), 40, np.uint8)
    image[15:45, 20:60] = colour
    return image[:, ::-1].copy() if flip else image


def open_page(browser, url: str, outside: list[str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(url, timeout=WAIT_MS)
    return page


def click_reference(page, image_path: Path) -> None:
    expect = playwright_api.expect
    page.locator("#ref-image input[type=file]").set_input_files(str(image_path))
    expect(page.locator("#ref-status")).to_contain_text("Now click", timeout=WAIT_MS)
    picture = page.locator("#ref-image img")
    box = picture.bounding_box()
    picture.click(position={"x": box["width"] / 2, "y": box["height"] / 2})


def download(page, selector: str, target: Path) -> Path:
    with page.expect_download(timeout=WAIT_MS) as info:
        page.locator(f"{selector} a[download]").first.click()
    info.value.save_as(target)
    return target


def test_click_learn_find_download_in_two_tabs_at_once(app_url, tmp_path):
    expect = playwright_api.expect
    mug = save_image(tmp_path / "mug.png", photo((200, 60, 40)))
    ball = save_image(tmp_path / "ball.png", photo((40, 60, 200)))
    kitchen = save_image(tmp_path / "kitchen.png", photo((200, 60, 40), flip=True))
    table = save_image(tmp_path / "table.png", photo((200, 60, 40))[::-1].copy())
    outside: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            first, second = open_page(browser, app_url, outside), open_page(browser, app_url, outside)
            click_reference(first, mug)
            click_reference(second, ball)
            for page in (first, second):
                expect(page.locator("#ref-status")).to_contain_text("Mask ready", timeout=WAIT_MS)
            first.locator("#name textarea, #name input").first.fill("my mug")
            second.locator("#name textarea, #name input").first.fill("red ball")
            second.locator("#method").get_by_text("PerSAM-F").click()
            first.locator("#learn").click()
            second.locator("#learn").click()  # both learn at the same time
            expect(first.locator("#learn-status")).to_contain_text("Learned 'my mug' with PerSAM ", timeout=WAIT_MS)
            expect(second.locator("#learn-status")).to_contain_text("Learned 'red ball' with PerSAM-F",
                                                                    timeout=WAIT_MS)
            expect(second.locator("#learn-status")).to_contain_text("w1 = ")
            first.locator("#targets input[type=file]").set_input_files([str(kitchen), str(table)])
            second.locator("#targets input[type=file]").set_input_files([str(table)])
            first.locator("#find").click()
            second.locator("#find").click()
            expect(first.locator("#find-status")).to_contain_text("Searched 2 photos", timeout=WAIT_MS)
            expect(second.locator("#find-status")).to_contain_text("Searched 1 photo", timeout=WAIT_MS)
            expect(first.locator("#gallery img")).to_have_count(2, timeout=WAIT_MS)
            expect(second.locator("#gallery img")).to_have_count(1, timeout=WAIT_MS)
            expect(first.locator("#gallery")).to_contain_text("kitchen.png: ")
            expect(first.locator("#gallery")).to_contain_text("table.png: ")

            mine = Concept.load(download(first, "#concept-file", tmp_path / "first.pt"))
            theirs = Concept.load(download(second, "#concept-file", tmp_path / "second.pt"))
            assert (mine.name, mine.method, mine.model_type) == ("my mug", "persam", "vit_t")
            assert (theirs.name, theirs.method) == ("red ball", "persam-f")
            assert not np.allclose(mine.target_feature.numpy(), theirs.target_feature.numpy())

            masks = download(first, "#masks-zip", tmp_path / "masks.zip")
            with zipfile.ZipFile(masks) as archive:
                assert sorted(archive.namelist()) == ["kitchen.png", "table.png"]
                archive.extractall(tmp_path / "masks")
            assert read_mask(tmp_path / "masks" / "kitchen.png").shape == (60, 80)

            # A mistake shows one line on the page, not a traceback.
            broken = write_bytes(tmp_path / "broken.pt", b"not a concept")
            second.locator("#concept-upload input[type=file]").set_input_files(str(broken))
            expect(second.locator("#learn-status")).to_contain_text("Error: ", timeout=60_000)
            expect(second.locator("#learn-status")).to_contain_text("is not a persam concept file")
            assert "Traceback" not in second.locator("body").inner_text()

            screenshot = first.screenshot(path=str(tmp_path / "persam_app.png"), full_page=True)
            assert screenshot
            shutil.copyfile(tmp_path / "persam_app.png", SCREENSHOT_COPY)
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this computer: {outside[:5]}"


def test_video_tab_tracks_a_clicked_object(app_url, tmp_path):
    expect = playwright_api.expect
    video = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"VP80"), 5, (80, 60))
    for shift in range(4):  # the red box moves right
        writer.write(cv2.cvtColor(np.roll(photo((200, 60, 40)), 2 * shift, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    outside: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, app_url, outside)
            page.get_by_role("tab", name="Video").click()
            page.locator("#video-in input[type=file]").set_input_files(str(video))
            expect(page.locator("#video-status")).to_contain_text("Click on your object", timeout=WAIT_MS)
            first_frame = page.locator("#video-first img")
            box = first_frame.bounding_box()
            first_frame.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
            expect(page.locator("#video-status")).to_contain_text("Object marked", timeout=WAIT_MS)
            page.locator("#track").click()
            expect(page.locator("#video-status")).to_contain_text("Tracked 4 frames", timeout=WAIT_MS)
            expect(page.locator("#video-out video")).to_have_attribute("src", re.compile(r"tracked\.webm"),
                                                                        timeout=WAIT_MS)
            page.screenshot(path=str(tmp_path / "persam_app_video.png"), full_page=True)
            shutil.copyfile(tmp_path / "persam_app_video.png", SCREENSHOT_COPY.with_name("persam_app_video.png"))
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this computer: {outside[:5]}"


def test_server_refuses_big_uploads_and_files_not_uploaded(app_url, vit_t_checkpoint, tmp_path):
    """No browser needed: what any local program could ask the server directly."""
    def status(request: urllib.request.Request | str) -> int:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    # A file the user never uploaded (here the checkpoint) is not served.
    assert status(f"{app_url}gradio_api/file={vit_t_checkpoint}") in (403, 404)
    assert status(f"{app_url}gradio_api/file=/etc/passwd") in (403, 404)
    # Over --max-upload-mb: refused; under it: accepted.
    def upload(megabytes: float) -> urllib.request.Request:
        boundary = "persamboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + b"0" * int(megabytes * 1024 * 1024) \
            + f"\r\n--{boundary}--\r\n".encode()
        return urllib.request.Request(f"{app_url}gradio_api/upload", data=body, method="POST",
                                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    assert status(upload(MAX_UPLOAD_MB + 1)) == 413
    assert status(upload(0.1)) == 200


# -- what a new user tried: bad uploads, concept files made elsewhere, undoing a box --------------
@pytest.fixture(scope="module")
def concept_file(vit_t_checkpoint, tmp_path_factory) -> Path:
    """A concept learned with the Python API and saved as the README's example does."""
    from persam import PerSAM

    mask = np.zeros((60, 80), bool)
    mask[15:45, 20:60] = True
    concept = PerSAM.from_checkpoint(vit_t_checkpoint).learn(photo((200, 60, 40)), mask, name="dog")
    return concept.save(tmp_path_factory.mktemp("concept") / "dog.concept")


@contextlib.contextmanager
def one_page(app_url: str):
    outside: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield open_page(browser, app_url, outside)
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this computer: {outside[:5]}"


def upload_one(page, selector: str, path: Path) -> None:
    """Upload into a single-file box, first clearing what it holds (it then has no file input)."""
    clear = page.locator(f"{selector} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))


def no_server_paths(locator) -> None:
    """Messages name files as the user uploaded them, never Gradio's temp copies."""
    text = locator.inner_text()
    assert "gradio" not in text and "/tmp" not in text, text


def test_find_goes_on_past_bad_photos_and_lists_them(app_url, concept_file, tmp_path):
    expect = playwright_api.expect
    kitchen = save_image(tmp_path / "kitchen.png", photo((200, 60, 40), flip=True))
    tiny = save_image(tmp_path / "tiny.png", np.full((10, 10, 3), 90, np.uint8))
    garbage = write_bytes(tmp_path / "garbage.jpg", b"these are not the pixels you are looking for")
    with one_page(app_url) as page:
        # The README's dog.save("dog.concept") can be picked and loaded.
        page.locator("#concept-upload input[type=file]").set_input_files(str(concept_file))
        expect(page.locator("#learn-status")).to_contain_text("Loaded 'dog' with PerSAM", timeout=WAIT_MS)
        page.locator("#targets input[type=file]").set_input_files([str(garbage), str(kitchen), str(tiny)])
        page.locator("#find").click()
        status = page.locator("#find-status")
        expect(status).to_contain_text("Searched 1 photo: found in", timeout=WAIT_MS)
        expect(status).to_contain_text("2 photos failed")
        expect(status.locator("li")).to_have_count(2)
        expect(status).to_contain_text("garbage.jpg is not an image")
        expect(status).to_contain_text("image tiny.png is 10x10 pixels; persam needs at least 16x16")
        no_server_paths(status)
        expect(page.locator("#gallery img")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#gallery")).to_contain_text("kitchen.png: ")
        with zipfile.ZipFile(download(page, "#masks-zip", tmp_path / "masks.zip")) as archive:
            assert archive.namelist() == ["kitchen.png"]


def test_concept_from_another_checkpoint_warns(app_url, concept_file, tmp_path):
    expect = playwright_api.expect
    # Same model type, other weights: what the API and CLI warn about (the model fingerprint differs).
    other = dataclasses.replace(Concept.load(concept_file), fingerprint="another checkpoint")
    path = other.save(tmp_path / "other.pt")
    with one_page(app_url) as page:
        upload_one(page, "#concept-upload", path)
        status = page.locator("#learn-status")
        expect(status).to_contain_text("Loaded 'dog'", timeout=WAIT_MS)
        # The words are the library's own (PerSAM.check_concept's warning).
        expect(status).to_contain_text(re.compile(r"Warning: concept .*learned with a different checkpoint"
                                                  r".*results may be poor"))
        upload_one(page, "#concept-upload", concept_file)  # made with this very checkpoint: no warning
        expect(status).not_to_contain_text("Warning", timeout=WAIT_MS)
        expect(status).to_contain_text("Loaded 'dog'")


def test_bad_reference_and_mask_uploads_are_refused_at_once(app_url, tmp_path):
    expect = playwright_api.expect
    tiny = save_image(tmp_path / "tiny.png", np.full((10, 10, 3), 90, np.uint8))
    mug = save_image(tmp_path / "mug.png", photo((200, 60, 40)))
    noise = save_image(tmp_path / "holiday.png", np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8))
    white = save_image(tmp_path / "white.png", np.full((60, 80), 255, np.uint8))
    garbage = write_bytes(tmp_path / "garbage.png", b"not a picture")
    good = np.zeros((60, 80), np.uint8)
    good[15:45, 20:60] = 255
    good = save_image(tmp_path / "mug_mask.png", good)
    with one_page(app_url) as page:
        status = page.locator("#ref-status")
        page.locator("#ref-image input[type=file]").set_input_files(str(tiny))
        expect(status).to_contain_text("Error: image tiny.png is 10x10 pixels; persam needs at least 16x16",
                                       timeout=WAIT_MS)
        expect(page.locator("#ref-image img")).to_have_count(0)  # nothing left to click on
        page.locator("#ref-image input[type=file]").set_input_files(str(mug))
        expect(status).to_contain_text("Now click", timeout=WAIT_MS)
        page.get_by_text("Already have a mask?").click()
        for path, message in ((noise, "Error: mask holiday.png looks like a photo, not a mask"),
                              (white, "Error: mask white.png marks every pixel as the object"),
                              (garbage, "Error: garbage.png is not an image")):
            upload_one(page, "#mask-upload", path)
            expect(status).to_contain_text(message, timeout=WAIT_MS)
            no_server_paths(status)
        upload_one(page, "#mask-upload", good)
        expect(status).to_contain_text("Mask ready (25.0% of the photo, from the uploaded mask)", timeout=WAIT_MS)


def test_undoing_a_box_asks_again_for_its_second_corner(app_url, tmp_path):
    expect = playwright_api.expect
    mug = save_image(tmp_path / "mug.png", photo((200, 60, 40)))
    with one_page(app_url) as page:
        status = page.locator("#ref-status")
        page.locator("#ref-image input[type=file]").set_input_files(str(mug))
        expect(status).to_contain_text("Now click", timeout=WAIT_MS)
        page.locator("#click-mode").get_by_text("Box: two corners").click()
        picture = page.locator("#ref-image img")
        box = picture.bounding_box()
        picture.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
        expect(status).to_contain_text("Now click the opposite corner of the box.", timeout=WAIT_MS)
        picture.click(position={"x": box["width"] * 0.75, "y": box["height"] * 0.75})
        expect(status).not_to_contain_text("opposite corner", timeout=WAIT_MS)
        page.locator("#undo").click()
        expect(status).to_contain_text("Now click the opposite corner of the box.", timeout=WAIT_MS)
        page.locator("#undo").click()
        expect(status).to_contain_text("Click on your object.", timeout=WAIT_MS)
