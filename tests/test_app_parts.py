"""``persam app`` without a browser: the command without Gradio, click bookkeeping, small-photo zoom."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_without_gradio_the_command_says_what_to_install():
    # sys.modules[name] = None makes "import gradio" fail as if it were not installed.
    code = ("import sys; sys.modules['gradio'] = None; from persam.cli import main; "
            "sys.exit(main(['app', '--checkpoint', 'missing.pt']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == 'persam app: error: the web page needs Gradio: pip install "persam[app]"'


def test_help_lists_app_without_importing_gradio():
    code = ("import sys; sys.modules['gradio'] = None; from persam.cli import main; main(['--help'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and " app " in result.stdout


gradio = pytest.importorskip("gradio")
from persam.app import MODE_BACKGROUND, MODE_BOX, MODE_OBJECT, Prompts, _click_position, display_zoom  # noqa: E402


def test_clicks_make_points_and_a_box_and_undo_steps_back():
    prompts = Prompts()
    assert not prompts.ready
    prompts.click(MODE_BACKGROUND, 5, 6)
    assert not prompts.ready  # a background point alone selects nothing
    prompts.click(MODE_OBJECT, 10, 20)
    prompts.click(MODE_BOX, 40, 30)
    assert prompts.corner == (40, 30) and prompts.box is None
    prompts.click(MODE_BOX, 12, 50)
    assert prompts.box == (12, 30, 40, 50) and prompts.corner is None
    assert prompts.points == [(5, 6), (10, 20)] and prompts.labels == [0, 1]
    prompts.undo()
    assert prompts.box is None and prompts.corner == (40, 30)
    prompts.undo()
    prompts.undo()
    assert prompts.points == [(5, 6)] and prompts.labels == [0] and prompts.corner is None
    prompts.undo()
    prompts.undo()  # nothing left: no error
    assert prompts.points == [] and not prompts.ready


def test_small_photos_are_shown_enlarged_and_clicks_map_back():
    small = np.zeros((60, 80, 3), np.uint8)
    assert display_zoom(small) == 5 and display_zoom(np.zeros((600, 800, 3), np.uint8)) == 1
    assert _click_position(small, SimpleNamespace(index=[399, 299])) == (79, 59)
    assert _click_position(small, SimpleNamespace(index=[12, 7])) == (2, 1)


class FakePage:
    """Records what ``launch`` asks of the Gradio page instead of serving it."""

    def __init__(self) -> None:
        self.calls: dict = {}

    def queue(self, **kwargs):
        self.calls["queue"] = kwargs

    def launch(self, **kwargs):
        self.calls["launch"] = kwargs

    def block_thread(self):
        self.calls["blocked"] = True


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_launch_is_local_private_and_limited(monkeypatch, capsys, host, warned):
    import persam.app as app

    page = FakePage()
    monkeypatch.setattr(app, "build_page", lambda persam, method: page)
    app.launch(object(), host=host, port=7999, max_upload_mb=3, block=True)
    settings = page.calls["launch"]
    assert settings["share"] is False and settings["server_name"] == host and settings["server_port"] == 7999
    assert settings["max_file_size"] == "3mb" and not settings.get("allowed_paths")
    assert page.calls["blocked"]
    err = capsys.readouterr().err
    assert ("warning: listening on 0.0.0.0" in err) == warned


def test_status_after_undo_follows_the_clicks():
    from persam.app import _click_note

    ready, start = "ready", "start"
    prompts = Prompts()
    prompts.click(MODE_BOX, 10, 10)
    assert _click_note(prompts, None, ready, start) == "Now click the opposite corner of the box."
    prompts.click(MODE_BOX, 30, 30)
    assert _click_note(prompts, np.ones((4, 4), bool), ready, start) == ready
    prompts.undo()  # the box goes, its first corner stays: ask for the second one again
    assert _click_note(prompts, None, ready, start) == "Now click the opposite corner of the box."
    prompts.undo()
    assert _click_note(prompts, None, ready, start) == start
    assert "SAM found nothing" in _click_note(prompts, np.zeros((4, 4), bool), ready, start)


def test_errors_name_uploads_as_the_user_named_them():
    from gradio.utils import get_upload_folder

    from persam.app import as_uploaded

    folder = get_upload_folder()
    text = f"{folder}/98acead0c1/garbage.jpg is not an image; {folder}/ab12/my photo.png too"
    assert as_uploaded(text) == "garbage.jpg is not an image; my photo.png too"
    assert as_uploaded("image /home/me/tiny.png is 10x10") == "image /home/me/tiny.png is 10x10"
