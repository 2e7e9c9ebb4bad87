"""``persam app``: the whole flow in a browser page (README 'Web page'), for people who use no terminal.

Reference (upload a photo, then click on the object: points in or out of it, or two clicks for
a box; or upload a mask) -> learn (PerSAM or PerSAM-F) -> targets (many photos; a gallery of overlays with found /
not found and a score) -> downloads (masks as a zip, the concept file). A second tab follows the
object through a short video with the :class:`~persam.Tracker`.

Safety: the server binds 127.0.0.1 unless told otherwise, never makes a public share link,
limits upload size, and reads only files the user uploaded (Gradio's own temp copies). Nothing
is fetched from the internet (no analytics, no web fonts), so the page works offline.

Gradio is an optional dependency (``pip install "persam[app]"``); this module is imported only
by ``persam app``.
"""
import os

# Before gradio is imported, and whatever the environment says: no usage statistics or version
# checks leave this machine (the page must work offline and tell no one what it is used for).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import argparse
import atexit
import functools
import io
import logging
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from persam_files import read_image, write_bytes

from .commands.support import Failure, exception_line, is_fatal
from .concept import Concept
from .masks import load_mask
from .model import PerSAM, check_image_size
from .overlay import draw_overlay
from .prior import EmptyTargetError, reference_grid

log = logging.getLogger("persam.app")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50
MAX_VIDEO_FRAMES = 150  # a few seconds of video: tracking costs one encoder pass per frame
OBJECT_BLUE = (30, 144, 255)
MIN_DISPLAY_SIDE = 400  # smaller photos are shown enlarged so that they can be clicked
GALLERY_SIDE = 640  # gallery pictures are shrunk to this many pixels on the long side

MODE_OBJECT = "Object point (+)"
MODE_BACKGROUND = "Not-the-object point (−)"
MODE_BOX = "Box: two corners"
METHOD_CHOICES = [("PerSAM: instant, no training", "persam"),
                  ("PerSAM-F: fits 2 weights on your photo (a few seconds)", "persam-f")]

INTRO = """
# persam: find *your* object in every photo
Show the object once, then find it in other photos or a video. Everything runs on this computer;
nothing is uploaded anywhere else.
"""

CSS = """
.step-title h2 { margin: 0.2em 0 0 0; }
.status p { font-size: 1.05em; margin: 0.2em 0; }
"""


# ----------------------------------------------------------------------------- the model, once
_MODEL_LOCK = threading.Lock()  # one model for all tabs: its embedding cache is not thread-safe
_models: dict[tuple, PerSAM] = {}


def load_persam(checkpoint: str, model_type: str = "auto", device: str = "cpu",
                fit_steps: int = 1000) -> PerSAM:
    """The PerSAM for this checkpoint, built on first use and shared by every browser tab."""
    from .commands.common import make_persam  # the same checks as the other commands

    key = (str(checkpoint), model_type, device, fit_steps)
    if key not in _models:
        _models[key] = make_persam(argparse.Namespace(model=model_type, checkpoint=checkpoint, device=device,
                                                      method="persam", fit_steps=fit_steps))
    return _models[key]


_work_root: Path | None = None


def _new_workdir() -> Path:
    """A fresh folder for one result's files (under a per-process temp folder removed at exit)."""
    global _work_root
    if _work_root is None:
        _work_root = Path(tempfile.mkdtemp(prefix="persam_app_"))
        atexit.register(shutil.rmtree, _work_root, True)
    return Path(tempfile.mkdtemp(dir=_work_root))


# ----------------------------------------------------------------------------- per-tab state
@dataclass
class Prompts:
    """Clicks on one picture: points with labels, and a box from two corner clicks."""

    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    corner: tuple | None = None  # first corner of a box waiting for the second
    box: tuple | None = None
    history: list = field(default_factory=list)  # what each click added, for undo

    def click(self, mode: str, x: int, y: int) -> None:
        if mode == MODE_BOX:
            if self.corner is None:
                self.history.append(("corner", self.box))
                self.corner = (x, y)
            else:
                self.history.append(("box", self.corner, self.box))
                (x0, y0), self.corner = self.corner, None
                self.box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
            return
        self.points.append((x, y))
        self.labels.append(0 if mode == MODE_BACKGROUND else 1)
        self.history.append(("point",))

    def undo(self) -> None:
        if not self.history:
            return
        last = self.history.pop()
        if last[0] == "point":
            self.points.pop()
            self.labels.pop()
        elif last[0] == "corner":
            self.corner, self.box = None, last[1]
        else:
            self.corner, self.box = last[1], last[2]

    @property
    def ready(self) -> bool:
        return 1 in self.labels or self.box is not None


@dataclass
class Session:
    """One browser tab's work (Gradio keeps a copy per tab in a gr.State)."""

    ref_image: np.ndarray | None = None
    ref_name: str = "object"
    prompts: Prompts = field(default_factory=Prompts)
    mask: np.ndarray | None = None
    mask_from: str = ""
    concept: Concept | None = None
    video_path: str | None = None
    video_first: np.ndarray | None = None
    video_prompts: Prompts = field(default_factory=Prompts)
    video_mask: np.ndarray | None = None


def _session(state: Session | None) -> Session:
    return state if isinstance(state, Session) else Session()


def _click_note(prompts: Prompts, mask: np.ndarray | None, ready: str, start: str) -> str:
    """The status after a click or an undo, read from the state itself (so an undo that
    brings back a box's first corner asks for the second one)."""
    if prompts.corner is not None:
        return "Now click the opposite corner of the box."
    if mask is None:
        return start
    if not mask.any():
        return "**!** SAM found nothing there; click elsewhere on the object."
    return ready


# ----------------------------------------------------------------------------- helpers
class Found(NamedTuple):
    overlay: np.ndarray
    mask: np.ndarray
    present: bool
    score: float


def _detect(persam: PerSAM, image: np.ndarray, concept: Concept) -> Found:
    """The object in one target photo: ``find`` (every copy, and whether it is there at all)
    where this persam has it, else ``segment`` (the paper's single mask)."""
    if hasattr(persam, "find"):
        detection = persam.find(image, concept)
        masks = [instance.mask for instance in detection.instances]
        union = np.zeros(image.shape[:2], bool)
        for mask in masks:
            union |= mask
        return Found(_overlay(image, masks), union, bool(detection.present), float(detection.score))
    result = persam.segment(image, concept)
    overlay = _overlay(image, [result.mask], result.points, result.labels, result.box)
    return Found(overlay, result.mask, not result.empty, float(result.score))


def as_uploaded(text: str) -> str:
    """``text`` with Gradio's temp copy of an upload (``<upload folder>/<hash>/photo.jpg``)
    named as the user uploaded it (``photo.jpg``): the server's paths mean nothing to them."""
    folder = get_upload_folder()
    for spelling in sorted({folder, str(Path(folder).resolve())}, key=len, reverse=True):
        text = re.sub(re.escape(spelling.rstrip("/\\")) + r"[/\\][^/\\\s]+[/\\]", "", text)
    return text


def _one_line(exc: BaseException) -> str:
    return as_uploaded(exception_line(exc))


def _error(exc: BaseException) -> str:
    return f"**Error:** {_one_line(exc)}"


def handler(status: gr.components.Component) -> Callable:
    """Run a page action; any error becomes one line in ``status`` (the traceback goes to the
    server log only). Actions return dicts {component: value}, so an error changes nothing else."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # shown on the page, never as a traceback
                log.warning("%s failed: %s", fn.__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                return {status: _error(exc)}
        return run
    return wrap


def _shrink(picture: np.ndarray, side: int = GALLERY_SIDE) -> np.ndarray:
    scale = side / max(picture.shape[:2])
    if scale >= 1:
        return picture
    size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def display_zoom(image: np.ndarray) -> int:
    """Whole-number enlargement for showing a small photo: the browser shows it at its own
    size, too small to click on; clicks are divided by the same factor."""
    return max(1, -(-MIN_DISPLAY_SIDE // max(image.shape[:2])))


def _overlay(image: np.ndarray, masks: list[np.ndarray], points=None, labels=None, box=None,
             corner: tuple | None = None) -> np.ndarray:
    """:func:`draw_overlay` on the photo enlarged by :func:`display_zoom` (markers keep a
    readable size), plus the first corner of a box being drawn."""
    zoom = display_zoom(image)
    if zoom > 1:
        image = image.repeat(zoom, 0).repeat(zoom, 1)
        masks = [mask.repeat(zoom, 0).repeat(zoom, 1) for mask in masks]
    centre = (zoom - 1) / 2  # source pixel p is drawn in the middle of its block
    if points is not None and len(points):
        points = np.asarray(points, dtype=float).reshape(-1, 2) * zoom + centre
    else:
        points = labels = None
    box = None if box is None else np.asarray(box, dtype=float) * zoom + centre
    picture = draw_overlay(image, masks, points, None if labels is None else np.asarray(labels), box,
                           colours=[OBJECT_BLUE] * len(masks))  # every copy blue, as the page says
    if corner is not None:
        scale = max(1, round(max(image.shape[:2]) / 500))
        cv2.drawMarker(picture, tuple(int(v * zoom + centre) for v in corner), (255, 215, 0),
                       cv2.MARKER_CROSS, 24 * scale, 3 * scale)
    return picture


def _prompt_picture(image: np.ndarray, mask: np.ndarray | None, prompts: Prompts) -> np.ndarray:
    """The photo with the mask tinted, points as stars, the box (or its first corner)."""
    return _overlay(image, [] if mask is None else [mask], prompts.points, prompts.labels, prompts.box,
                    prompts.corner)


def _click_position(image: np.ndarray, evt: gr.SelectData) -> tuple[int, int]:
    """The source-image pixel under a click on the (maybe enlarged) picture."""
    zoom = display_zoom(image)
    height, width = image.shape[:2]
    x, y = (int(v) // zoom for v in evt.index[:2])
    return min(max(x, 0), width - 1), min(max(y, 0), height - 1)


def _mask_png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _unique_stems(paths: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def _uploaded_path(value: Any) -> str | None:
    """The temp path of an uploaded file (a str, or an object with .name / .path)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return getattr(value, "path", None) or getattr(value, "name", None)


# ----------------------------------------------------------------------------- the page
def build_page(persam: PerSAM, default_method: str = "persam") -> gr.Blocks:
    """The Blocks page around one shared ``persam`` (see :func:`launch`)."""

    def with_model(fn: Callable, *args, **kwargs):
        with _MODEL_LOCK:
            return fn(*args, **kwargs)

    with gr.Blocks(title="persam: find your object", analytics_enabled=False) as page:
        state = gr.State(None)
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Photos", id="photos"):
                # -- step 1 --------------------------------------------------------------
                gr.Markdown("## 1 · Show your object", elem_classes="step-title")
                gr.Markdown("Upload a photo of it, then **click on the object**. The blue area is "
                            "what will be learned; add more clicks until it covers the object "
                            "(green stars: object clicks, red stars: *not the object* clicks).")
                with gr.Row():
                    with gr.Column(scale=3):
                        ref_picture = gr.Image(label="Reference photo: upload, then click on your object",
                                               type="filepath", sources=["upload"], elem_id="ref-image",
                                               height=420, buttons=["fullscreen"])
                    with gr.Column(scale=2):
                        click_mode = gr.Radio([MODE_OBJECT, MODE_BACKGROUND, MODE_BOX], value=MODE_OBJECT,
                                              label="A click adds", elem_id="click-mode")
                        with gr.Row():
                            undo_button = gr.Button("Undo last click", size="sm", elem_id="undo")
                            clear_button = gr.Button("Clear clicks", size="sm", elem_id="clear")
                        ref_status = gr.Markdown("Waiting for a photo.", elem_id="ref-status",
                                                 elem_classes="status")
                        with gr.Accordion("Already have a mask? Upload it instead", open=False):
                            mask_upload = gr.File(label="Mask image (white = object, same size as the photo)",
                                                  file_types=["image"], type="filepath", elem_id="mask-upload")
                # -- step 2 --------------------------------------------------------------
                gr.Markdown("## 2 · Learn it", elem_classes="step-title")
                gr.Markdown("Press **Learn my object**. Keep the concept file to skip steps 1-2 next time.")
                with gr.Row():
                    with gr.Column(scale=3):
                        method = gr.Radio(METHOD_CHOICES, value=default_method, label="Method",
                                          elem_id="method")
                        name = gr.Textbox(label="Name (optional)", placeholder="e.g. my mug", elem_id="name")
                        learn_button = gr.Button("Learn my object", variant="primary", elem_id="learn")
                        learn_status = gr.Markdown("", elem_id="learn-status", elem_classes="status")
                    with gr.Column(scale=2):
                        concept_download = gr.File(label="Download the concept file (reuse it later)",
                                                   interactive=False, elem_id="concept-file", visible=False)
                        # Any suffix: the API saves "dog.concept" too, and Concept.load refuses
                        # a file that is not a concept with a clear line.
                        concept_upload = gr.File(label="Or load a concept file you saved before "
                                                       "(.pt, .concept)",
                                                 file_types=None, type="filepath", elem_id="concept-upload",
                                                 height=140)
                # -- step 3 --------------------------------------------------------------
                gr.Markdown("## 3 · Find it in other photos", elem_classes="step-title")
                gr.Markdown("Upload the photos to search and press **Find my object**. Each result shows "
                            "your object in blue, whether it was found, and a score.")
                with gr.Row():
                    with gr.Column(scale=2):
                        targets = gr.File(label="Photos to search (select many)", file_count="multiple",
                                          file_types=["image"], type="filepath", elem_id="targets")
                        find_button = gr.Button("Find my object", variant="primary", elem_id="find")
                        find_status = gr.Markdown("", elem_id="find-status", elem_classes="status")
                        masks_download = gr.File(label="Download all masks (zip of PNGs, white = object)",
                                                 interactive=False, elem_id="masks-zip", visible=False)
                    with gr.Column(scale=3):
                        gallery = gr.Gallery(label="Results (blue = your object)", columns=3, height=480,
                                             object_fit="contain", elem_id="gallery",
                                             buttons=["download", "download_all", "fullscreen"])
            with gr.Tab("Video", id="video"):
                gr.Markdown(f"## Follow your object through a short video\n"
                            f"**1** Upload a video (up to {MAX_VIDEO_FRAMES} frames are used). "
                            "**2** Click on your object in the first frame. **3** Press *Track*.")
                with gr.Row():
                    with gr.Column():
                        # A file box, not gr.Video: the video box's trim button loads FFmpeg from the internet.
                        video_in = gr.File(label="Your video (mp4, webm, avi, mov...)", file_types=["video"],
                                           type="filepath", elem_id="video-in", height=140)
                        video_first = gr.Image(label="First frame: click on your object", interactive=False,
                                               elem_id="video-first", height=360, buttons=["fullscreen"])
                        video_mode = gr.Radio([MODE_OBJECT, MODE_BACKGROUND, MODE_BOX], value=MODE_OBJECT,
                                              label="A click adds")
                        with gr.Row():
                            video_undo = gr.Button("Undo last click", size="sm")
                            video_clear = gr.Button("Clear clicks", size="sm")
                    with gr.Column():
                        video_method = gr.Radio(METHOD_CHOICES, value=default_method, label="Method")
                        track_button = gr.Button("Track", variant="primary", elem_id="track")
                        video_status = gr.Markdown("Waiting for a video.", elem_id="video-status",
                                                   elem_classes="status")
                        video_out = gr.Video(label="Tracked (your object in blue)", interactive=False,
                                             elem_id="video-out", buttons=["download"])

        # -- step 1 actions ------------------------------------------------------------
        def reference_view(session: Session, note: str) -> dict:
            picture = _prompt_picture(session.ref_image, session.mask, session.prompts)
            return {state: session, ref_picture: picture, ref_status: note}

        def mask_note(session: Session) -> str:
            share = 0.0 if session.mask is None else 100.0 * session.mask.mean()
            return _click_note(session.prompts, session.mask,
                               f"✓ Mask ready ({share:.1f}% of the photo, from {session.mask_from}). "
                               "Not right? Click more, or undo.", "Click on your object.")

        @handler(ref_status)
        def on_reference_clear(session):
            session = _session(session)
            session.ref_image, session.mask, session.prompts = None, None, Prompts()
            return {state: session, ref_status: "Waiting for a photo."}

        @handler(ref_status)
        def on_reference_upload(path, session):
            session = _session(session)
            if path is None:
                return on_reference_clear(session)
            try:
                image = read_image(path)
                check_image_size(image, Path(path).name)  # refused now, not at the first click
            except ValueError as exc:  # unreadable or too small (ImageReadError, ImageSizeError)
                # The box shows the refused photo: clear it, so nothing can be clicked on it.
                cleared = on_reference_clear(session)
                return {**cleared, ref_picture: None, ref_status: _error(exc)}
            session.ref_image, session.ref_name = image, Path(path).stem
            session.prompts, session.mask = Prompts(), None
            return reference_view(session, "Now click on your object in the photo.")

        def remake_mask(session: Session) -> None:
            if not session.prompts.ready:
                session.mask = None
                return
            prompts = session.prompts
            mask = with_model(persam.reference_mask, session.ref_image, prompts.points or None,
                              prompts.labels or None, prompts.box)
            session.mask, session.mask_from = mask, "your clicks"

        @handler(ref_status)
        def on_reference_click(mode, session, evt: gr.SelectData):
            session = _session(session)
            if session.ref_image is None:
                raise ValueError("upload a reference photo first")
            x, y = _click_position(session.ref_image, evt)
            session.prompts.click(mode, x, y)
            if mode == MODE_BOX and session.prompts.corner is not None:
                return reference_view(session, mask_note(session))
            try:
                remake_mask(session)
            except Exception:
                session.prompts.undo()  # a click that failed is not kept
                raise
            return reference_view(session, mask_note(session))

        @handler(ref_status)
        def on_undo(session):
            session = _session(session)
            if session.ref_image is None:
                return {ref_status: "Waiting for a photo."}
            if session.prompts.history:  # nothing to undo keeps an uploaded mask
                session.prompts.undo()
                remake_mask(session)
            return reference_view(session, mask_note(session))

        @handler(ref_status)
        def on_clear(session):
            session = _session(session)
            if session.ref_image is None:
                return {ref_status: "Waiting for a photo."}
            session.prompts, session.mask = Prompts(), None
            return reference_view(session, "Clicks cleared. Click on your object.")

        @handler(ref_status)
        def on_mask_upload(path, session):
            session = _session(session)
            if path is None:
                return {state: session}
            if session.ref_image is None:
                raise ValueError("upload the reference photo first, then its mask")
            # The API's checked loader: a photo, or a mask of every pixel, is refused here, not at Learn.
            mask = load_mask(path, session.ref_image.shape[:2], name=f"mask {Path(path).name}")
            session.prompts, session.mask, session.mask_from = Prompts(), mask, "the uploaded mask"
            return reference_view(session, mask_note(session))

        ref_picture.upload(on_reference_upload, [ref_picture, state], [state, ref_picture, ref_status])
        ref_picture.clear(on_reference_clear, [state], [state, ref_picture, ref_status])
        ref_picture.select(on_reference_click, [click_mode, state], [state, ref_picture, ref_status])
        undo_button.click(on_undo, [state], [state, ref_picture, ref_status])
        clear_button.click(on_clear, [state], [state, ref_picture, ref_status])
        mask_upload.upload(on_mask_upload, [mask_upload, state], [state, ref_picture, ref_status])

        # -- step 2 actions ------------------------------------------------------------
        def concept_summary(concept: Concept, seconds: float | None = None) -> str:
            label = f"'{concept.name}'" if concept.name else "your object"
            text = f"✓ Learned {label} with {'PerSAM-F' if concept.method == 'persam-f' else 'PerSAM'}"
            if seconds is not None:
                text += f" in {seconds:.1f} s"
            if concept.mask_weights is not None:
                weights = concept.mask_weights.tolist()
                text += (f"; fitted weights w1 = {weights[1]:.3f}, w2 = {weights[2]:.3f} "
                         f"(the third scale gets {weights[0]:.3f})")
            return text + ". Now go to step 3."

        @handler(learn_status)
        def on_learn(chosen_method, chosen_name, session, progress=gr.Progress()):
            session = _session(session)
            if session.ref_image is None:
                raise ValueError("step 1 first: upload a photo of your object")
            if session.mask is None or not session.mask.any():
                raise ValueError("step 1 first: click on your object (or upload its mask)")
            try:
                reference_grid(session.mask, "the reference mask")
            except EmptyTargetError:
                raise ValueError("the mask is too thin to learn from (SAM looks at 16x16-pixel cells); "
                                 "click more of the object or draw a box") from None
            progress(0.1, desc="Learning" + (" (fitting the 2 weights)" if chosen_method == "persam-f" else ""))
            start = time.perf_counter()
            concept = with_model(persam.learn, session.ref_image, session.mask, method=chosen_method,
                                 name=(chosen_name or "").strip() or session.ref_name)
            seconds = time.perf_counter() - start
            session.concept = concept
            safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in concept.name) or "concept"
            path = concept.save(_new_workdir() / f"{safe_name}.pt")
            return {state: session, learn_status: concept_summary(concept, seconds),
                    concept_download: gr.update(value=str(path), visible=True)}

        @handler(learn_status)
        def on_concept_upload(path, session):
            session = _session(session)
            if path is None:
                return {state: session}
            concept = Concept.load(path)
            # check_concept warns (another checkpoint of the same model type) as in the API and
            # CLI; the page shows its words. Under the lock: warning filters are process-wide.
            with _MODEL_LOCK, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                persam.check_concept(concept)
            session.concept = concept
            note = concept_summary(concept).replace("Learned", "Loaded", 1)
            for warning in caught:
                note += f"\n\n**Warning:** {as_uploaded(str(warning.message))}"
            return {state: session, learn_status: note, concept_download: gr.update(value=None, visible=False)}

        learn_button.click(on_learn, [method, name, state], [state, learn_status, concept_download])
        concept_upload.upload(on_concept_upload, [concept_upload, state], [state, learn_status, concept_download])

        # -- step 3 actions ------------------------------------------------------------
        @handler(find_status)
        def on_find(paths, session, progress=gr.Progress()):
            session = _session(session)
            if session.concept is None:
                raise ValueError("step 2 first: learn your object (or load a concept file)")
            paths = [p for p in (_uploaded_path(v) for v in (paths or [])) if p]
            if not paths:
                raise ValueError("upload the photos to search first")
            stems = _unique_stems(paths)
            items, found, failures = [], 0, []
            archive = io.BytesIO()
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as masks_zip:
                for index, (path, stem) in enumerate(zip(paths, stems)):
                    shown = Path(path).name  # the name the user uploaded (Gradio keeps it)
                    progress(index / len(paths), desc=f"Searching {shown} ({index + 1}/{len(paths)})")
                    try:  # like `persam find`: a bad photo is listed, the others are still searched
                        image = read_image(path)
                        check_image_size(image, shown)
                        result = with_model(_detect, persam, image, session.concept)
                    except Exception as exc:
                        if is_fatal(exc):
                            raise
                        failures.append(Failure(shown, _one_line(exc)))
                        continue
                    found += int(result.present)
                    verdict = "found" if result.present else "not found"
                    items.append((_shrink(result.overlay), f"{shown}: {verdict} (score {result.score:.2f})"))
                    masks_zip.writestr(f"{stem}.png", _mask_png_bytes(result.mask))
            searched = len(items)
            if searched:
                zip_path = write_bytes(_new_workdir() / "persam_masks.zip", archive.getvalue())
                note = f"✓ Searched {searched} photo{'s' if searched > 1 else ''}: found in {found}."
                download = gr.update(value=str(zip_path), visible=True)
            else:
                note, download = "**Error:** no photo could be searched.", gr.update(value=None, visible=False)
            if failures:
                note += (f"\n\n**{len(failures)} photo{'s' if len(failures) > 1 else ''} failed:**\n"
                         + "".join(f"\n- {failure.line()}" for failure in failures))
            return {state: session, gallery: items, find_status: note, masks_download: download}

        find_button.click(on_find, [targets, state], [state, gallery, find_status, masks_download])

        # -- video actions -------------------------------------------------------------
        def video_view(session: Session, note: str) -> dict:
            picture = _prompt_picture(session.video_first, session.video_mask, session.video_prompts)
            return {state: session, video_first: picture, video_status: note}

        @handler(video_status)
        def on_video_clear_upload(session):
            session = _session(session)
            session.video_path, session.video_first, session.video_mask = None, None, None
            return {state: session, video_first: None, video_status: "Waiting for a video."}

        @handler(video_status)
        def on_video_upload(path, session):
            from .commands.track import FrameSource

            session = _session(session)
            if path is None:
                return on_video_clear_upload(session)
            source = FrameSource(path)
            check_image_size(source.first_frame(), Path(path).name)  # refused now, not at Track
            session.video_path, session.video_first = path, source.first_frame()
            session.video_prompts, session.video_mask = Prompts(), None
            return video_view(session, "Click on your object in the first frame.")

        def remake_video_mask(session: Session) -> None:
            prompts = session.video_prompts
            session.video_mask = None if not prompts.ready else with_model(
                persam.reference_mask, session.video_first, prompts.points or None, prompts.labels or None,
                prompts.box)

        @handler(video_status)
        def on_video_click(mode, session, evt: gr.SelectData):
            session = _session(session)
            if session.video_first is None:
                raise ValueError("upload a video first")
            x, y = _click_position(session.video_first, evt)
            session.video_prompts.click(mode, x, y)
            if mode == MODE_BOX and session.video_prompts.corner is not None:
                return video_view(session, video_note(session))
            try:
                remake_video_mask(session)
            except Exception:
                session.video_prompts.undo()  # a click that failed is not kept
                raise
            return video_view(session, video_note(session))

        def video_note(session: Session) -> str:
            return _click_note(session.video_prompts, session.video_mask, "✓ Object marked. Press Track.",
                               "Click on your object in the first frame.")

        def change_video_prompts(session, change: Callable[[Session], None]) -> dict:
            session = _session(session)
            if session.video_first is None:
                return {video_status: "Waiting for a video."}
            change(session)
            remake_video_mask(session)
            return video_view(session, video_note(session))

        @handler(video_status)
        def on_video_undo(session):
            return change_video_prompts(session, lambda s: s.video_prompts.undo())

        @handler(video_status)
        def on_video_clear(session):
            return change_video_prompts(session, lambda s: setattr(s, "video_prompts", Prompts()))

        @handler(video_status)
        def on_track(chosen_method, session, progress=gr.Progress()):
            from .commands.track import FrameSource, palette_colours, overlay_frame
            from persam_files import voc_palette
            from .video import Tracker

            session = _session(session)
            if session.video_path is None:
                raise ValueError("upload a video first")
            if session.video_mask is None or not session.video_mask.any():
                raise ValueError("click on your object in the first frame first")
            source = FrameSource(session.video_path)
            total = min(source.count_hint or MAX_VIDEO_FRAMES, MAX_VIDEO_FRAMES)
            colours = palette_colours(voc_palette())
            colours[1] = OBJECT_BLUE  # the same blue as the photos
            labels = session.video_mask.astype(np.uint8)
            out_path = _new_workdir() / "tracked.webm"
            height, width = labels.shape
            fps = source.fps or 24.0
            # VP8 in WebM: browsers play it, and OpenCV's bundled FFmpeg writes it (no system ffmpeg).
            writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"VP80"), fps, (width, height))
            if not writer.isOpened():
                raise ValueError("cannot write the tracked video (OpenCV has no VP8 encoder)")
            written = 0
            try:
                with _MODEL_LOCK:
                    tracker = Tracker(persam, method=chosen_method)
                    for index, (_, frame) in enumerate(source):
                        if index >= MAX_VIDEO_FRAMES:
                            break
                        progress(index / total, desc=f"Tracking frame {index + 1}/{total}")
                        if frame.shape[:2] != labels.shape:
                            raise ValueError(f"frame {index} has a different size from the first frame")
                        if index == 0:
                            tracker.start(frame, labels)
                            result = labels
                        else:
                            result = tracker.step(frame)
                        writer.write(cv2.cvtColor(overlay_frame(frame, result, colours), cv2.COLOR_RGB2BGR))
                        written += 1
            finally:
                writer.release()
            note = f"✓ Tracked {written} frames."
            if (source.count_hint or 0) > MAX_VIDEO_FRAMES:
                note += f" (the first {MAX_VIDEO_FRAMES} of {source.count_hint})"
            return {state: session, video_out: str(out_path), video_status: note}

        video_in.upload(on_video_upload, [video_in, state], [state, video_first, video_status])
        video_in.clear(on_video_clear_upload, [state], [state, video_first, video_status])
        video_first.select(on_video_click, [video_mode, state], [state, video_first, video_status])
        video_undo.click(on_video_undo, [state], [state, video_first, video_status])
        video_clear.click(on_video_clear, [state], [state, video_first, video_status])
        track_button.click(on_track, [video_method, state], [state, video_out, video_status])
    return page


def theme() -> gr.themes.Base:
    """The default look with system fonts: the stock theme pulls web fonts from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def launch(persam: PerSAM, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, default_method: str = "persam",
           block: bool = True) -> gr.Blocks:
    """Serve the page. Never shares publicly; binding beyond this computer prints a warning."""
    if host not in LOCAL_HOSTS:
        print(f"persam app: warning: listening on {host}: anyone who can reach this computer on port "
              f"{port} can use the page (and its CPU/GPU); use --host 127.0.0.1 to keep it local",
              file=sys.stderr)
    if max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be positive")
    page = build_page(persam, default_method)
    page.queue(default_concurrency_limit=4)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                max_file_size=f"{max_upload_mb:g}mb", prevent_thread_lock=True, ssr_mode=False,
                theme=theme(), css=CSS, footer_links=[], pwa=False, mcp_server=False, quiet=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"persam app: open http://{shown}:{port} in your browser (Ctrl+C stops it)", flush=True)
    if block:
        page.block_thread()
    return page
