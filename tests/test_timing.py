"""``persam.timing.product_flops``: counts of matrix-product, convolution and attention work,
against values computed by hand from the shapes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from persam.timing import product_flops
from sam_core import build_sam, set_onednn_linear
from sam_core.common import Linear

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("onednn", [True, False])
def test_linear_counts_two_per_multiply_add_on_either_path(onednn):
    layer = Linear(16, 32)
    x = torch.randn(300, 16)  # 300 rows: enough for the oneDNN path when it is on
    try:
        set_onednn_linear(onednn)
        with torch.no_grad():
            assert product_flops(lambda: layer(x)) == 2 * 300 * 16 * 32
    finally:
        set_onednn_linear(True)


def test_grouped_convolution_and_attention():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: 9 multiply-adds per output
    x = torch.randn(1, 8, 5, 6)
    assert product_flops(lambda: conv(x)) == 2 * (5 * 6 * 8) * 9
    q = torch.randn(3, 2, 4, 8)  # 3 x 2 heads, 4 queries and 4 keys of 8 values
    mask = torch.zeros(1, 2, 4, 4)
    with torch.no_grad():
        # q k^T and (attention) v: two products of 4 x 4 x 8 per head; softmax not counted
        assert product_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask)) == 2 * (2 * 6 * 4 * 4 * 8)


def test_elementwise_work_is_not_counted():
    x = torch.randn(64, 64)
    assert product_flops(lambda: F.gelu(x).sum() + F.layer_norm(x, (64,)).mean()) == 0


def _tiny_vit_flops(size: int = 1024) -> int:
    """MobileSAM's TinyViT (vit_t) encoder, written out from its architecture: 2 x multiply-adds."""
    def conv(out_pixels, out_chans, in_per_group, kernel):
        return 2 * out_pixels * out_chans * in_per_group * kernel * kernel

    def attention(windows, heads, tokens, head_dim=32):
        return 2 * 2 * windows * heads * tokens * tokens * head_dim

    def block(pixels, dim, windows, heads, tokens):
        return (2 * pixels * dim * (3 * dim + dim + 4 * dim + 4 * dim)  # qkv, proj, fc1, fc2
                + 2 * dim * 3 * dim  # q, k, v of the zero token that pads the grid to whole windows
                + attention(windows, heads, tokens) + conv(pixels, dim, 1, 3))

    def merge(in_pixels, out_pixels, dim, out_dim):
        return conv(in_pixels, out_dim, dim, 1) + conv(out_pixels, out_dim, 1, 3) + conv(out_pixels, out_dim, out_dim, 1)

    p0, p1, p2 = (size // 4) ** 2, (size // 8) ** 2, (size // 16) ** 2  # 256^2, 128^2, 64^2
    total = conv((size // 2) ** 2, 32, 3, 3) + conv(p0, 64, 32, 3)  # patch embedding
    total += 2 * (conv(p0, 256, 64, 1) + conv(p0, 256, 1, 3) + conv(p0, 64, 256, 1))  # 2 MBConv
    total += merge(p0, p1, 64, 128)
    total += 2 * block(p1, 128, 19 * 19, 4, 49)  # 128 -> 133 = 19 windows of 7 per side
    total += merge(p1, p2, 128, 160)
    total += 6 * block(p2, 160, 5 * 5, 5, 196)  # 64 -> 70 = 5 windows of 14
    total += merge(p2, p2, 160, 320)  # the last merge keeps 64x64
    total += 2 * block(p2, 320, 10 * 10, 10, 49)  # 64 -> 70 = 10 windows of 7
    total += conv(p2, 256, 320, 1) + conv(p2, 256, 256, 3)  # neck
    return total


def test_vit_t_encoder_count_equals_its_architecture():
    torch.manual_seed(0)
    encoder = build_sam(model_type="vit_t").image_encoder.eval()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        counted = product_flops(lambda: encoder(x))
    assert counted == _tiny_vit_flops()  # 74.9 GFLOP


def test_bench_encoder_prints_the_arithmetic():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_encoder.py"), "--random", "vit_t",
                          "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if "arithmetic:" in line)
    assert f"{_tiny_vit_flops() / 1e9:.1f} GFLOP per pass" in line


def test_bench_search_arithmetic(vit_t_checkpoint, tmp_path):
    """scripts/bench_search.py's count: the encoder's is the architecture's, find's is its
    decoder work on the candidates it decoded."""
    import importlib.util

    from persam import PerSAM, build_sam

    spec = importlib.util.spec_from_file_location("bench_search", REPO / "scripts" / "bench_search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    persam = PerSAM(build_sam("auto", vit_t_checkpoint), cache_size=0)
    album = bench.generated_album(tmp_path / "album", 1)
    (album / "broken.jpg").write_bytes(b"not an image")  # skipped, not counted
    concept = persam.learn(*_disc_reference())
    bench.search([album], {"disc": concept}, tmp_path / "out", persam=persam, index=tmp_path / "index",
                 progress=False)  # fills the index, as (a) does
    numbers = bench.arithmetic(persam, album, tmp_path / "index", concept)
    assert numbers["images_counted"] == 1
    assert numbers["encoder_gflop"] == _tiny_vit_flops() / 1e9
    assert 1 <= numbers["find_decoded"] <= numbers["find_candidates"]
    # each decoded candidate costs at least one decoder pass of one prompt set (> 1 GFLOP)
    assert numbers["find_gflop"] > numbers["find_decoded"]


def _disc_reference():
    import numpy as np

    ys, xs = np.mgrid[0:480, 0:640]
    image = np.full((480, 640, 3), 120, np.uint8)
    mask = (ys - 240) ** 2 + (xs - 320) ** 2 < 80 ** 2
    image[mask] = (200, 40, 40)
    return image, mask
