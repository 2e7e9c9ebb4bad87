"""Readers never leak another exception (README, 15): mutated files of every kind persam reads.

Each case takes a valid file generated here (PNG, JPEG, TIFF, WebP, BMP, 16-bit PNG, palette
masks, concept files, a checkpoint in the official layout), mutates its bytes (bit flips,
truncation, insertion, a header's width/height overwritten with a huge value, a PNG chunk
corrupted with or without a valid CRC) and reads it back with the library's reader. The reader
may succeed (a flip in pixel data is still an image), or raise the library's own error whose
message names the file; anything else (SyntaxError, struct.error, DecompressionBombError, an
error without the file name...) fails the test.

Hypothesis is derandomized, so CI runs the same 1,200 cases every time (about 10-30 s on one
core).
"""
from __future__ import annotations

import io
import itertools
import struct
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from persam import Concept, ConceptError, MaskError, load_mask
from persam_files import ImageReadError, MaskReadError, read_image, read_image_size, read_label_map
from sam_core import CheckpointError, read_state_dict

def fuzz(cases: int) -> settings:
    return settings(max_examples=cases, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_WORK = Path(tempfile.mkdtemp(prefix="persam-fuzz-"))
_names = itertools.count()


# ----------------------------------------------------------------------------- originals
def _image_bytes(fmt: str, **kwargs) -> bytes:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _sixteen_bit_png() -> bytes:
    values = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 271).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def _palette_mask() -> bytes:
    labels = np.zeros((12, 20), np.uint8)
    labels[3:9, 4:12] = 1
    labels[5:11, 10:18] = 2
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _grey_mask() -> bytes:
    mask = np.zeros((12, 20), np.uint8)
    mask[2:10, 3:15] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _concept(method: str) -> bytes:
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(256, generator=generator)
    concept = Concept(method=method, target_embedding=embedding, target_feature=embedding / embedding.norm(),
                      model_type="vit_t", fingerprint="0123456789abcdef01234567", name="dog",
                      mask_weights=torch.tensor([0.2, 0.3, 0.5]) if method == "persam-f" else None)
    path = _WORK / f"original-{method}.pt"
    concept.save(path)
    return path.read_bytes()


def _checkpoint() -> bytes:
    """A tiny state dict in the official layout (names and ranks of a ViT SAM, small sizes)."""
    generator = torch.Generator().manual_seed(0)
    state = {
        "image_encoder.pos_embed": torch.randn(1, 4, 4, 8, generator=generator),
        "image_encoder.blocks.0.attn.rel_pos_h": torch.randn(7, 4, generator=generator),
        "image_encoder.blocks.0.attn.rel_pos_w": torch.randn(7, 4, generator=generator),
        "prompt_encoder.no_mask_embed.weight": torch.randn(1, 8, generator=generator),
        "mask_decoder.iou_token.weight": torch.randn(1, 8, generator=generator),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@lru_cache(maxsize=None)
def original(kind: str) -> bytes:
    makers: dict[str, Callable[[], bytes]] = {
        "png": lambda: _image_bytes("PNG"),
        "jpeg": lambda: _image_bytes("JPEG", quality=90),
        "tiff": lambda: _image_bytes("TIFF"),
        "tiff_lzw": lambda: _image_bytes("TIFF", compression="tiff_lzw"),
        "webp": lambda: _image_bytes("WEBP", quality=80),
        "bmp": lambda: _image_bytes("BMP"),
        "png16": _sixteen_bit_png,
        "palette_mask": _palette_mask,
        "grey_mask": _grey_mask,
        "concept": lambda: _concept("persam"),
        "concept_f": lambda: _concept("persam-f"),
        "checkpoint": _checkpoint,
    }
    return makers[kind]()


SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "tiff_lzw": ".tiff", "webp": ".webp",
          "bmp": ".bmp", "png16": ".png", "palette_mask": ".png", "grey_mask": ".png",
          "concept": ".pt", "concept_f": ".pt", "checkpoint": ".pth"}


# ----------------------------------------------------------------------------- mutations
HUGE = (0, 1, 65535, 70000, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF)


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, data length, type) of each chunk of a PNG."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset: offset + 8])
        chunks.append((offset, length, kind))
        offset += 12 + length
    return chunks


def _with_crc(data: bytearray, offset: int, length: int) -> None:
    body = bytes(data[offset + 4: offset + 8 + length])
    data[offset + 8 + length: offset + 12 + length] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def overwrite_size(data: bytes, kind: str, width: int, height: int, fix_crc: bool) -> bytes:
    """The header's width and height set to (possibly huge) values, where the format has them."""
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = struct.pack(">II", width, height)
        if fix_crc:  # a valid CRC gets past the checksum to the size checks
            _with_crc(out, 8, 13)
    elif data.startswith(b"BM"):
        out[18:26] = struct.pack("<ii", width & 0x7FFFFFFF, height & 0x7FFFFFFF)
    elif data.startswith(b"\xff\xd8"):
        sof = data.find(b"\xff\xc0")
        if sof >= 0:
            out[sof + 5: sof + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    else:  # TIFF, WebP, torch zips: the same 8 bytes at a header-ish offset
        at = min(16, max(len(out) - 8, 0))
        out[at: at + 8] = struct.pack("<II", width, height)
    return bytes(out)


def corrupt_chunk(data: bytes, which: float, where: float, value: int, fix_crc: bool) -> bytes:
    """One byte of one PNG chunk (length, type or data) replaced; others: one byte mid-file."""
    out = bytearray(data)
    chunks = _png_chunks(data) if data.startswith(b"\x89PNG") else []
    if not chunks:
        position = int(where * (len(out) - 1))
        out[position] = value
        return bytes(out)
    offset, length, _ = chunks[min(int(which * len(chunks)), len(chunks) - 1)]
    position = offset + int(where * (8 + length))  # length, type or data bytes
    out[position] = value
    if fix_crc and position >= offset + 4:
        _with_crc(out, offset, length)
    return bytes(out)


def flip_bits(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data)
    for where, bit in flips:
        out[int(where * (len(out) - 1))] ^= 1 << bit
    return bytes(out)


def truncate(data: bytes, keep: float) -> bytes:
    return data[: int(keep * len(data))]


def insert(data: bytes, where: float, extra: bytes) -> bytes:
    position = int(where * len(data))
    return data[:position] + extra + data[position:]


fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
mutations = st.one_of(
    st.builds(lambda flips: lambda data, kind: flip_bits(data, flips),
              st.lists(st.tuples(fraction, st.integers(0, 7)), min_size=1, max_size=8)),
    st.builds(lambda keep: lambda data, kind: truncate(data, keep), fraction),
    st.builds(lambda where, extra: lambda data, kind: insert(data, where, extra), fraction,
              st.binary(min_size=1, max_size=16)),
    st.builds(lambda width, height, fix: lambda data, kind: overwrite_size(data, kind, width, height, fix),
              st.sampled_from(HUGE), st.sampled_from(HUGE), st.booleans()),
    st.builds(lambda which, where, value, fix: lambda data, kind: corrupt_chunk(data, which, where, value, fix),
              fraction, fraction, st.integers(0, 255), st.booleans()),
)


def mutated_file(kind: str, mutate) -> Path:
    path = _WORK / f"case{next(_names):05d}{SUFFIX[kind]}"
    path.write_bytes(mutate(original(kind), kind))
    return path


def assert_only(error: type[Exception], read: Callable[[Path], object], path: Path) -> None:
    """``read(path)`` returns, or raises ``error`` with a one-line message naming ``path``."""
    try:
        read(path)
    except error as exc:
        message = str(exc)
        assert str(path) in message, f"{type(exc).__name__} does not name the file: {message!r}"
        assert "\n" not in message.strip(), f"message is not one line: {message!r}"
    except BaseException as exc:  # noqa: B902 - the point is that nothing else escapes
        pytest.fail(f"{path.name}: {type(exc).__name__} escaped the reader: {exc}")
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the cases
IMAGE_KINDS = ("png", "jpeg", "tiff", "tiff_lzw", "webp", "bmp", "png16")


@fuzz(500)
@given(kind=st.sampled_from(IMAGE_KINDS), mutate=mutations)
def test_mutated_images_raise_image_read_error(kind, mutate):
    assert_only(ImageReadError, read_image, mutated_file(kind, mutate))


@fuzz(100)
@given(kind=st.sampled_from(IMAGE_KINDS), mutate=mutations)
def test_mutated_image_sizes_raise_image_read_error(kind, mutate):
    assert_only(ImageReadError, read_image_size, mutated_file(kind, mutate))


@fuzz(250)
@given(kind=st.sampled_from(("palette_mask", "grey_mask")), mutate=mutations)
def test_mutated_masks_raise_mask_error(kind, mutate):
    assert_only(MaskError, lambda path: load_mask(path, allow_empty=True), mutated_file(kind, mutate))


@fuzz(100)
@given(mutate=mutations)
def test_mutated_label_maps_raise_mask_read_error(mutate):
    assert_only(MaskReadError, read_label_map, mutated_file("palette_mask", mutate))


@fuzz(150)
@given(kind=st.sampled_from(("concept", "concept_f")), mutate=mutations)
def test_mutated_concepts_raise_concept_error(kind, mutate):
    assert_only(ConceptError, Concept.load, mutated_file(kind, mutate))


@fuzz(150)
@given(mutate=mutations)
def test_mutated_checkpoints_raise_checkpoint_error(mutate):
    assert_only(CheckpointError, read_state_dict, mutated_file("checkpoint", mutate))


def test_originals_read_back():
    """The unmutated files are valid: the fuzz cases start from real files of each kind."""
    for kind in IMAGE_KINDS:
        path = _WORK / f"ok-{kind}{SUFFIX[kind]}"
        path.write_bytes(original(kind))
        assert read_image(path).shape == (12, 20, 3)
    path = _WORK / "ok-mask.png"
    path.write_bytes(original("palette_mask"))
    assert set(np.unique(read_label_map(path)).tolist()) == {0, 1, 2}
    assert load_mask(path).sum() > 0
    for kind in ("concept", "concept_f"):
        path = _WORK / f"ok-{kind}.pt"
        path.write_bytes(original(kind))
        assert Concept.load(path).name == "dog"
    path = _WORK / "ok.pth"
    path.write_bytes(original("checkpoint"))
    assert set(read_state_dict(path)) >= {"image_encoder.pos_embed", "mask_decoder.iou_token.weight"}


@pytest.mark.parametrize("kind", ["png", "palette_mask"])
def test_known_leaks_are_closed(kind):
    """The two leaks found first: a PNG chunk broken (SyntaxError) and a header claiming
    billions of pixels (DecompressionBombError without the file name)."""
    def break_idat(data: bytes, _) -> bytes:  # one data byte of IDAT changed, CRC left stale
        offset, length, _ = next(chunk for chunk in _png_chunks(data) if chunk[2] == b"IDAT")
        out = bytearray(data)
        out[offset + 8 + length // 2] ^= 0xA5
        return bytes(out)

    broken = mutated_file(kind, break_idat)
    bomb = mutated_file(kind, lambda data, _: overwrite_size(data, kind, 0x7FFFFFFF, 0x7FFFFFFF, True))
    reader = read_image if kind == "png" else load_mask
    for path in (broken, bomb):
        with pytest.raises(ImageReadError, match=path.name):
            reader(path)
        path.unlink()
