"""SAM's pre- and post-processing, without torchvision.

* resize: longest side to 1024 with PIL bilinear on the uint8 image (what torchvision's
  ``resize`` does to a PIL image), new size ``int(dim * 1024 / max(H, W) + 0.5)``;
* normalize with ImageNet mean/std (0-255 scale), pad bottom/right with zeros;
* postprocess: low-res logits -> bilinear to 1024 -> crop to the resized size -> bilinear
  to the original size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
IMAGE_SIZE = 1024


def resized_shape(original_size: tuple[int, int], long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side``."""
    height, width = original_size
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_uint8(array: np.ndarray, long_side: int = IMAGE_SIZE) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) uint8 array with PIL bilinear (antialiased when shrinking)."""
    new_h, new_w = resized_shape(array.shape[:2], long_side)
    return np.array(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR))


def normalize_and_pad(image: torch.Tensor, mean=PIXEL_MEAN, std=PIXEL_STD,
                      size: int = IMAGE_SIZE) -> torch.Tensor:
    """(B, C, h, w) 0-255 values -> (B, C, size, size) normalized, zero padded bottom/right."""
    channels = image.shape[1]
    mean_t = torch.tensor(mean[:channels], dtype=torch.float32, device=image.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std[:channels], dtype=torch.float32, device=image.device).view(1, -1, 1, 1)
    image = (image - mean_t) / std_t
    return F.pad(image, (0, size - image.shape[-1], 0, size - image.shape[-2]))


def preprocess_image(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> model input (1, 3, 1024, 1024)."""
    resized = resize_uint8(image)
    tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
    return normalize_and_pad(tensor)


def postprocess_masks(masks: torch.Tensor, input_size: tuple[int, int],
                      original_size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) low-res logits -> (B, K, H, W) logits at the original image size."""
    masks = F.interpolate(masks, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def scale_coords(coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) (x, y) pixel coordinates of the original image -> the resized frame (float64)."""
    old_h, old_w = original_size
    new_h, new_w = resized_shape(original_size)
    coords = np.array(coords, dtype=np.float64, copy=True)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def scale_boxes(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(..., 4) (x0, y0, x1, y1) boxes of the original image -> the resized frame."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return scale_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
