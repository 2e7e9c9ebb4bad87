"""``persam app`` in a real browser (SPEC 14): Chromium (Debian's package) driven by Playwright.

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

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

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
                               "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
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
