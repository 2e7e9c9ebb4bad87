"""The command line as a new user meets it: every check goes through the real ``persam`` entry
point (``python -m persam``) in a subprocess, and looks at what a person sees: the exit status,
stderr (one line per problem, no traceback, no raw Python warning), and the files left behind
(good images' results present after a bad one, nothing half-written, no empty output folder).

The numbered sections follow the issue "The command line as a new user meets it".
"""
from __future__ import annotations

import ast
import builtins
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from persam import Concept

REPO = Path(__file__).resolve().parents[1]


def persam(*args, cwd=None, tty_stderr=False):
    """Run ``python -m persam ARGS``; returns (exit status, stdout, stderr lines).

    With ``tty_stderr`` stderr is a pseudo-terminal, so progress bars are drawn as a person sees
    them; its text is then split on both carriage returns and newlines (bar redraws)."""
    command = [sys.executable, "-m", "persam", *map(str, args)]
    if not tty_stderr:
        run = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=os.environ.copy())
        return run.returncode, run.stdout, [line for line in run.stderr.splitlines() if line.strip()]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, cwd=cwd, env=os.environ.copy())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = process.stdout.read().decode()
    process.wait()
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    return process.returncode, stdout, [piece for piece in re.split(r"[\r\n]+", text) if piece.strip()]


def assert_clean(stderr_lines):
    text = "\n".join(stderr_lines)
    assert "Traceback" not in text, text
    assert "Warning:" not in text, text  # Python's own "UserWarning: ..." format
    assert ".py:" not in text, text  # no file:line of a raw warning


def errors(stderr_lines, command="segment"):
    assert_clean(stderr_lines)
    for line in stderr_lines:
        assert line.startswith(f"persam {command}: error: "), line
    return stderr_lines


def save_rgb(path: Path, seed: int, size=(64, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def save_mask(path: Path, size=(64, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    mask[12:52, 16:64] = 255
    Image.fromarray(mask).save(path)
    return path


def save_corrupt(path: Path) -> Path:
    good = save_rgb(path.with_name("tmp_good.jpg"), 99)
    path.write_bytes(good.read_bytes()[:150])  # a JPEG header, then nothing
    good.unlink()
    return path


@pytest.fixture()
def ref(tmp_path):
    return save_rgb(tmp_path / "ref.jpg", 0), save_mask(tmp_path / "ref_mask.png")


def model_type_of(checkpoint) -> str:
    from sam_core import build_sam

    return build_sam("auto", checkpoint).model_type


@pytest.fixture(scope="module")
def small_model_type(small_checkpoint):
    return model_type_of(small_checkpoint)


def make_concept(path: Path, model_type: str, method="persam", fingerprint="another checkpoint") -> Path:
    """A concept file without running a model (random features; the machinery is what's tested)."""
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(256, generator=generator)
    Concept(method=method, target_embedding=embedding, target_feature=embedding / embedding.norm(),
            model_type=model_type, fingerprint=fingerprint, name="thing",
            mask_weights=torch.tensor([0.2, 0.3, 0.5]) if method == "persam-f" else None).save(path)
    return path


# 1. A batch goes on past a bad image ------------------------------------------------------------


def test_segment_goes_on_past_bad_images_and_lists_them(small_checkpoint, ref, tmp_path):
    good_a = save_rgb(tmp_path / "in" / "a.jpg", 1)
    corrupt = save_corrupt(tmp_path / "in" / "corrupt.jpg")
    tiny = save_rgb(tmp_path / "in" / "tiny.png", 2, size=(1, 1))  # too small for SAM (item 2)
    good_b = save_rgb(tmp_path / "in" / "b.jpg", 3)
    out = tmp_path / "o"
    status, stdout, err = persam("segment", "--checkpoint", small_checkpoint, "--ref-image", ref[0],
                                 "--ref-mask", ref[1], "--out", out, good_a, corrupt, tiny, good_b)
    assert status == 1
    errors(err)
    assert len(err) == 2, err  # one line per bad image, listed at the end
    assert "corrupt.jpg" in err[0] and "truncated" in err[0]
    assert "tiny.png" in err[1] and "1x1 pixels" in err[1] and "16x16" in err[1]
    for good in (good_a, good_b):  # b.jpg comes after the bad ones and is still segmented
        assert np.array(Image.open(out / f"{good.stem}.png")).shape == (64, 80)
    assert not (out / "corrupt.png").exists() and not (out / "tiny.png").exists()
    listed = (out / "failures.txt").read_text().splitlines()
    assert len(listed) == 2 and "corrupt.jpg" in listed[0] and "tiny.png" in listed[1]
    assert "wrote 2 masks" in stdout and "2 images failed" in stdout
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files


def make_perseg(root: Path, broken_index: str | None = None) -> Path:
    for index in ("00", "01", "02"):
        save_rgb(root / "Images" / "thing" / f"{index}.jpg", int(index) + 10)
        save_mask(root / "Annotations" / "thing" / f"{index}.png")
    if broken_index:
        save_corrupt(root / "Images" / "thing" / f"{broken_index}.jpg")
    return root


def test_perseg_goes_on_past_a_bad_image_then_scores_when_fixed(small_checkpoint, tmp_path):
    data = make_perseg(tmp_path / "perseg", broken_index="01")
    out = tmp_path / "o"
    status, stdout, err = persam("perseg", "--data", data, "--checkpoint", small_checkpoint, "--out", out)
    assert status == 1
    assert len(errors(err, "perseg")) == 1 and "01.jpg" in err[0]
    assert (out / "thing" / "00.png").is_file() and (out / "thing" / "02.png").is_file()
    assert "thing/01" in (out / "failures.txt").read_text() or "01.jpg" in (out / "failures.txt").read_text()
    assert not (out / "results.json").exists() and "nothing was scored" in stdout

    save_rgb(data / "Images" / "thing" / "01.jpg", 11)  # fixed: the run scores, stale list removed
    status, stdout, err = persam("perseg", "--data", data, "--checkpoint", small_checkpoint, "--out", out)
    assert status == 0, err
    assert err == []
    assert not (out / "failures.txt").exists() and (out / "results.json").is_file()
    # 6. say which images are scored: 3 written, 2 test images scored, the reference not.
    assert "wrote 3 masks of 1 object" in stdout
    assert "scored 2 test images (the reference, index 00, is not scored)" in stdout
    assert "mIoU:" in stdout and "%" in stdout.split("mIoU:")[1].splitlines()[0]  # labelled percent


# 2. Warnings: one line each, once, never inside a progress bar ----------------------------------
# 5. --method persam with a PerSAM-F concept is not silently ignored ----------------------------


def test_warnings_are_one_line_once_and_above_the_bar(small_checkpoint, small_model_type, tmp_path):
    concept = make_concept(tmp_path / "thing.concept", small_model_type, method="persam-f")
    images = [save_rgb(tmp_path / "in" / f"{i}.jpg", 20 + i) for i in range(2)]
    out = tmp_path / "o"
    status, stdout, err = persam("segment", "--checkpoint", small_checkpoint, "--concept", concept,
                                 "--method", "persam", "--out", out, *images, tty_stderr=True)
    assert status == 0, err
    assert_clean(err)
    warnings_seen = [line for line in err if "warning" in line]
    expected = ["persam segment: warning: --method persam ignored: concept "
                f"{concept} was learned with persam-f, so it segments with persam-f",
                f"persam segment: warning: concept 'thing' was learned with a different checkpoint of SAM "
                f"{small_model_type}; results may be poor"]
    # Each is a line of its own (a raw warning printed into a bar would share the bar's line),
    # and printed once although every image triggers the checkpoint warning again.
    assert warnings_seen == expected, err
    assert any("segment (persam-f)" in line for line in err), err  # the bar was drawn
    assert "wrote 2 masks" in stdout


# 3. Outputs: clear errors, nothing created before the checks pass -------------------------------


def test_out_or_save_on_an_existing_file(small_checkpoint, ref, tmp_path):
    blocker = tmp_path / "outfile"
    blocker.write_text("mine")
    image = save_rgb(tmp_path / "a.jpg", 1)
    runs = {
        "segment": ("segment", "--checkpoint", small_checkpoint, "--ref-image", ref[0], "--ref-mask", ref[1],
                    "--out", blocker, image),
        "learn": ("learn", "--checkpoint", small_checkpoint, "--ref-image", ref[0], "--ref-mask", ref[1],
                  "--save", blocker / "thing.concept"),
        "perseg": ("perseg", "--data", make_perseg(tmp_path / "perseg"), "--checkpoint", small_checkpoint,
                   "--out", blocker),
    }
    for command, args in runs.items():
        status, stdout, err = persam(*args)
        assert status == 1
        assert len(errors(err, command)) == 1, err
        assert "Errno" not in err[0] and "outfile" in err[0] and "is a" in err[0] and "file" in err[0], err
    assert blocker.read_text() == "mine"


def test_a_failed_check_leaves_no_output_folder(small_checkpoint, tmp_path):
    image = save_rgb(tmp_path / "a.jpg", 1)
    wrong_model = make_concept(tmp_path / "vit_h.concept", "vit_h")  # checked after the model loads
    out = tmp_path / "o"
    status, _, err = persam("segment", "--checkpoint", small_checkpoint, "--concept", wrong_model,
                            "--out", out, image)
    assert status == 1
    assert len(errors(err)) == 1 and "vit_h" in err[0]
    assert not out.exists()


# 4. Messages in the user's terms ----------------------------------------------------------------


def test_messages_do_not_leak_library_internals(small_checkpoint, small_model_type, tmp_path):
    image = save_rgb(tmp_path / "a.jpg", 1)
    concept = make_concept(tmp_path / "ok.concept", small_model_type)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(small_checkpoint.read_bytes()[:5_000_000])
    junk = tmp_path / "junk.concept"
    junk.write_text("hello\n")

    status, _, err = persam("segment", "--checkpoint", truncated, "--concept", concept, "--out",
                            tmp_path / "o", image)
    assert status == 1 and len(errors(err)) == 1
    assert "truncated.pth is truncated or corrupt (not a complete PyTorch checkpoint" in err[0]
    assert not re.search(r"miniz|PytorchStreamReader|zip archive", err[0])

    status, _, err = persam("segment", "--checkpoint", small_checkpoint, "--concept", junk, "--out",
                            tmp_path / "o", image)
    assert status == 1 and len(errors(err)) == 1
    assert "junk.concept is not a persam concept file" in err[0] and "persam learn" in err[0]
    assert not re.search(r"\(\d+\)", err[0])  # no bare pickle opcode numbers

    status, _, err = persam("segment", "--checkpoint", small_checkpoint, "--device", "tpu", "--concept",
                            concept, "--out", tmp_path / "o", image)
    assert status == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "unknown device 'tpu'; use cpu, cuda, cuda:N" in err[0]
    assert not re.search(r"xla|mkldnn|privateuseone", err[0])
    assert not (tmp_path / "o").exists()


# 5. Nothing silently ignored or misread ---------------------------------------------------------


def test_a_photo_given_as_mask_is_refused(small_checkpoint, ref, tmp_path):
    photo = save_rgb(tmp_path / "photo.png", 5)
    status, _, err = persam("learn", "--checkpoint", small_checkpoint, "--ref-image", ref[0],
                            "--ref-mask", photo, "--save", tmp_path / "x.concept")
    assert status == 1 and len(errors(err, "learn")) == 1
    assert "photo.png looks like a photo, not a mask" in err[0]
    assert not (tmp_path / "x.concept").exists()


def test_folders_mirrored_under_out_mask_and_out_never_taken_as_inputs(small_checkpoint, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    ref_image = save_rgb(d1 / "x.jpg", 1)
    ref_mask = save_mask(d1 / "x_mask.png")  # sits in the input folder
    save_rgb(d1 / "sub" / "y.jpg", 2)  # a sub-folder: searched, not skipped
    save_rgb(d2 / "x.jpg", 3)  # same name as d1/x.jpg
    out = d1 / "results"  # inside an input folder: a rerun must not segment its own masks
    (out / "old").mkdir(parents=True)
    save_mask(out / "old" / "earlier.png")
    status, stdout, err = persam("segment", "--checkpoint", small_checkpoint, "--ref-image", ref_image,
                                 "--ref-mask", ref_mask, "--out", out, d1, d2)
    assert status == 0, err
    assert err == []
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["d1/sub/y.png", "d1/x.png", "d2/x.png", "old/earlier.png"], written
    assert "wrote 3 masks" in stdout


def test_two_inputs_that_would_write_the_same_file(small_checkpoint, ref, tmp_path):
    save_rgb(tmp_path / "in" / "x.jpg", 1)
    save_rgb(tmp_path / "in" / "x.png", 2)
    status, _, err = persam("segment", "--checkpoint", small_checkpoint, "--ref-image", ref[0],
                            "--ref-mask", ref[1], "--out", tmp_path / "o", tmp_path / "in")
    assert status == 1 and len(errors(err)) == 1
    assert "x.jpg" in err[0] and "x.png" in err[0] and "rename one" in err[0]
    assert not (tmp_path / "o").exists()


# 6. Consistency ---------------------------------------------------------------------------------


def test_version_threads_no_progress_on_every_command():
    from persam import __version__
    from persam.cli import build_parser

    status, stdout, err = persam("--version")
    assert status == 0 and stdout.strip() == f"persam {__version__}"
    status, stdout, _ = persam("segment", "--help")
    assert status == 0 and "--no-progress" in stdout and "--threads" in stdout
    assert "torch uses every core" in " ".join(stdout.split())
    subparsers = next(a for a in build_parser()._actions if a.choices and "segment" in a.choices)
    leaves = []
    for name, parser in subparsers.choices.items():
        nested = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        leaves += [p for a in nested for p in a.choices.values()] if nested else [parser]
    assert {p.prog for p in leaves} >= {"persam segment", "persam learn", "persam perseg", "persam eval perseg",
                                        "persam eval davis", "persam davis", "persam track", "persam bench"}
    for parser in leaves:
        help_text = parser.format_help()
        assert "--no-progress" in help_text and "--threads" in help_text, parser.prog


def test_argument_errors_are_one_line_before_any_work(small_checkpoint, ref, tmp_path):
    image = save_rgb(tmp_path / "a.jpg", 1)
    status, _, err = persam("segment", "--checkpoint", small_checkpoint, "--ref-image", ref[0], "--ref-mask",
                            ref[1], "--out", tmp_path / "o", "--fit-steps", "0", image, tty_stderr=True)
    assert status == 2
    assert err == ["persam segment: error: argument --fit-steps: must be at least 1, got 0 "
                   "(see 'persam segment --help')"]  # no bar drawn before it
    status, _, err = persam("eval", "perseg", "--pred", tmp_path / "none", "--gt", tmp_path / "nothing")
    assert status == 1 and len(err) == 1 and err[0].startswith("persam eval perseg: error: "), err
    status, _, err = persam("segment", "--threads", "zero", "--checkpoint", small_checkpoint, "--concept",
                            "x", "--out", tmp_path / "o", image)
    assert status == 2 and len(err) == 1 and "--threads" in err[0]


def test_learn_persam_f_explains_the_third_weight(small_checkpoint, ref, tmp_path):
    save = tmp_path / "thing.concept"
    status, stdout, err = persam("learn", "--checkpoint", small_checkpoint, "--ref-image", ref[0], "--ref-mask",
                                 ref[1], "--method", "persam-f", "--fit-steps", "5", "--threads", "1",
                                 "--save", save)
    assert status == 0, err
    assert err == []
    found = re.search(r"w1=([\d.]+), w2=([\d.]+) \(the first mask gets 1 - w1 - w2 = ([-\d.]+)\)", stdout)
    assert found, stdout
    w1, w2, first = map(float, found.groups())
    assert abs(first - (1 - w1 - w2)) < 2e-4
    assert "1 reference)" in stdout  # singular
    weights = Concept.load(save).mask_weights.tolist()
    assert weights == pytest.approx([first, w1, w2], abs=1e-4)


# 7. The API as a new user meets it ------------------------------------------------------------


def test_concept_repr_is_one_line(small_model_type, tmp_path):
    concept = Concept.load(make_concept(tmp_path / "c.concept", small_model_type, method="persam-f"))
    text = repr(concept)
    assert "\n" not in text and len(text) < 120
    assert text == f"Concept('thing', persam-f, SAM {small_model_type}, 1 reference, mask weights 0.200/0.300/0.500)"
    assert str(concept) == text


def test_readme_api_snippet_defines_every_name_it_uses():
    readme = (REPO / "README.md").read_text()
    api = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", api, flags=re.S).group(1)
    tree = ast.parse(code)
    defined = set(dir(builtins))
    undefined = []
    for node in tree.body:  # statement by statement: a name must be bound before it is read
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and child.id not in defined:
                undefined.append(child.id)
        for child in ast.walk(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                defined |= {(alias.asname or alias.name).split(".")[0] for alias in child.names}
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                defined.add(child.id)
    assert undefined == [], f"the README's API snippet uses names it never defines: {undefined}"
    import persam

    imported = re.findall(r"from persam import (.+)", code)[0].split(", ")
    assert all(hasattr(persam, name) for name in imported)
    assert re.search(r"take\s+(a few|about|\d+)[^.]*minutes", readme.split("Run the tests", 1)[1].split("```")[0])


def test_collect_inputs_rules(tmp_path):
    """The input rules behind ``segment``'s folders, without a model: symlinked images are
    mirrored where the user sees them, a file given twice is segmented once, excluded files
    (the --ref-mask) are never picked from a folder, hidden files are skipped."""
    from persam.inputs import InputError, collect_inputs

    photos = tmp_path / "photos"
    save_rgb(photos / "b.jpg", 1)
    save_rgb(tmp_path / "elsewhere" / "target.jpg", 2)
    (photos / "link.jpg").symlink_to(tmp_path / "elsewhere" / "target.jpg")
    save_mask(photos / "b_mask.png")
    save_rgb(photos / ".hidden.jpg", 3)
    found = collect_inputs([photos, photos / "b.jpg"], out=tmp_path / "o", exclude=[photos / "b_mask.png"])
    assert [str(item.output(Path("OUT"))) for item in found] == ["OUT/b.png", "OUT/link.png"]
    with pytest.raises(InputError, match="not found"):
        collect_inputs([tmp_path / "missing.jpg"])
    with pytest.raises(InputError, match="contains no images"):
        collect_inputs([photos], exclude=[photos / "b.jpg", photos / "link.jpg", photos / "b_mask.png"])


def test_a_reader_that_goes_away_is_not_an_error():
    # `persam models | head -0`: the pipe's reader closes; persam stops quietly (status 141, as a
    # Unix tool killed by SIGPIPE), not with "error: broken pipe"
    process = subprocess.Popen([sys.executable, "-m", "persam", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() == 141 and err == "", err


def test_perseg_no_eval_needs_only_the_references_annotations(small_checkpoint, tmp_path):
    data = make_perseg(tmp_path / "perseg")
    (data / "Annotations" / "thing" / "02.png").unlink()  # a test image nobody annotated
    out = tmp_path / "o"
    status, stdout, err = persam("perseg", "--data", data, "--checkpoint", small_checkpoint, "--out", out,
                                 "--no-eval")
    assert status == 0, err
    assert all((out / "thing" / f"{index}.png").is_file() for index in ("00", "01", "02"))
    assert "wrote 3 masks" in stdout
    # scoring still needs every annotation, and says which one is missing
    status, stdout, err = persam("perseg", "--data", data, "--checkpoint", small_checkpoint, "--out", out)
    assert status == 1 and "no annotation for Images/thing/02.jpg" in err[0], err
    (data / "Annotations" / "thing" / "00.png").unlink()  # the reference's own is needed even so
    status, stdout, err = persam("perseg", "--data", data, "--checkpoint", small_checkpoint, "--out", out,
                                 "--no-eval")
    assert status == 1 and "Images/thing/00.jpg" in err[0], err
