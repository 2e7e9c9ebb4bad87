"""Command-line settings reach the work they control: ``--fit-steps`` in ``persam track`` and
``persam davis`` (and in davis's resume marker), and a broken sub-command is an error, not a
command silently missing from ``--help``. The SAM stand-in is test_video's ColourEngine."""
from __future__ import annotations

import json

import pytest
from PIL import Image

import persam.cli as cli
import persam.mask_weights as mask_weights
from persam.cli import main
from persam.video import Tracker
from test_video import ColourEngine, draw_scene, save_palette_png, write_davis


@pytest.fixture
def fit_steps_seen(monkeypatch) -> list[int]:
    """Every PerSAM-F fit's step count, as passed to the real fitting function."""
    seen: list[int] = []
    original = mask_weights.fit_mask_weights

    def recording(references, steps, **kwargs):
        seen.append(steps)
        return original(references, steps=steps, **kwargs)

    monkeypatch.setattr(mask_weights, "fit_mask_weights", recording)
    return seen


def test_track_uses_fit_steps(tmp_path, monkeypatch, fit_steps_seen, capsys):
    import persam.commands.track as track_cmd

    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(2):
        Image.fromarray(draw_scene(t, objects=(2, 9))[0]).save(frames / f"{t:05d}.png")
    save_palette_png(tmp_path / "first.png", draw_scene(0, objects=(2, 9))[1])
    monkeypatch.setattr(track_cmd, "load_sam", lambda args: ColourEngine())
    status = main(["track", "--checkpoint", "unused.pth", "--frames", str(frames), "--method", "persam-f",
                   "--fit-steps", "7", "--first-mask", str(tmp_path / "first.png"),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert fit_steps_seen == [7, 7]  # one fit per object, with the steps asked for
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png"]


def test_track_rejects_bad_fit_steps(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(draw_scene(0)[0]).save(frames / "00000.png")
    save_palette_png(tmp_path / "first.png", draw_scene(0)[1])
    # An argument error, as for every command: one line, exit status 2, before any work.
    with pytest.raises(SystemExit) as stop:
        main(["track", "--checkpoint", "unused.pth", "--frames", str(frames), "--fit-steps", "0",
              "--first-mask", str(tmp_path / "first.png"), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "--fit-steps: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_davis_uses_fit_steps_and_resumes_only_with_the_same_steps(tmp_path, monkeypatch, fit_steps_seen,
                                                                   capsys):
    import persam.commands.davis as davis_cmd

    data, out = tmp_path / "davis", tmp_path / "results"
    write_davis(data, {"alpha": (2,)}, frames=2)
    monkeypatch.setattr(davis_cmd, "load_sam", lambda args: ColourEngine())
    started: list[int] = []
    original_start = Tracker.start

    def counting_start(self, frame, labels):
        started.append(self.fit_steps)
        return original_start(self, frame, labels)

    monkeypatch.setattr(Tracker, "start", counting_start)

    def run(steps: int) -> None:
        argv = ["davis", "--data", str(data), "--checkpoint", "unused.pth", "--out", str(out),
                "--method", "persam-f", "--fit-steps", str(steps), "--no-eval", "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err

    run(3)
    assert started == [3] and fit_steps_seen == [3]
    assert json.loads((out / "alpha" / ".done").read_text())["fit_steps"] == 3
    run(3)  # same settings: the finished sequence is reused
    assert started == [3]
    run(4)  # other settings: redone, never mixed with the 3-step results
    assert started == [3, 4] and fit_steps_seen == [3, 4]
    assert json.loads((out / "alpha" / ".done").read_text())["fit_steps"] == 4


def test_davis_marker_ignores_fit_steps_for_persam():
    import persam.commands.davis as davis_cmd

    assert davis_cmd.run_info("persam", "vit_t", "x", 10) == davis_cmd.run_info("persam", "vit_t", "x", 20)
    assert davis_cmd.run_info("persam-f", "vit_t", "x", 10) != davis_cmd.run_info("persam-f", "vit_t", "x", 20)


def test_a_command_that_fails_to_import_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("no_such_command",))
    with pytest.raises(ImportError, match="no_such_command"):
        cli.build_parser()


def test_every_listed_command_is_registered():
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    assert {"segment", "learn", "perseg", "eval", "davis", "track", "bench"} <= set(commands)
