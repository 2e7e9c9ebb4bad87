"""A stub SAM engine for testing ``find``'s candidate, suppression and presence logic.

Encoder: the feature of a grid cell is a deterministic function of its mean colour, (r, g, b,
0.3) in the first four channels, so cells of the same colour have cosine similarity 1 and red
is far from blue. Decoder: the mask of a prompt set is the 4-connected region of pixels of
exactly the clicked pixel's colour (inside the box prompt, if any), as low-res logits +-10.
Images must be 256x256: SAM's 256x256 low-res grid is then the pixel grid itself, so the real
``SamEngine.upsample`` turns the stub's logits back into exactly that region.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from sam_core.engine import Decoded, ImageEmbedding, SamEngine
from sam_core.transforms import resized_shape

SIZE = 256
RED = (255, 0, 0)
DARK_RED = (235, 0, 0)
BLUE = (0, 0, 255)
PURPLE = (128, 0, 128)
STUB_IOU = 0.9  # the stub's predicted IoU for the mask it returns


class StubSam(nn.Module):
    model_type = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device


def colour_features(image: np.ndarray) -> torch.Tensor:
    """(1, 256, 64, 64): each cell's mean colour of the 1024x1024 input as (r, g, b, 0.3)."""
    cells = image.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3)) / 255.0
    features = torch.zeros(1, 256, 64, 64)
    features[0, :3] = torch.as_tensor(cells, dtype=torch.float32).permute(2, 0, 1)
    features[0, 3] = 0.3
    return features


class StubEngine(SamEngine):
    def __init__(self) -> None:  # no real model: nothing of SamEngine.__init__ applies
        self.sam = StubSam()
        self._dense_pe = None
        self.images: dict[int, np.ndarray] = {}
        self.decode_calls: list[int] = []  # batch size of every decoder call

    def encode(self, image) -> ImageEmbedding:
        image = np.asarray(image)
        assert image.shape[:2] == (SIZE, SIZE), "the stub engine takes 256x256 images"
        embedding = ImageEmbedding(colour_features(image), resized_shape(image.shape[:2]), (SIZE, SIZE))
        self.images[id(embedding.features)] = image
        return embedding

    def region(self, image: np.ndarray, point, box=None) -> np.ndarray:
        x, y = int(round(point[0])), int(round(point[1]))
        same = np.all(image == image[y, x], axis=2).astype(np.uint8)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            inside = np.zeros_like(same)
            inside[y0: y1 + 1, x0: x1 + 1] = 1
            same &= inside
        _, components = cv2.connectedComponents(same, connectivity=4)
        return (components == components[y, x]) & (same > 0)

    def decode_batch(self, embedding, points, labels, boxes=None, mask_input=None, multimask=True,
                     attn_sim=None, target_embedding=None) -> Decoded:
        image = self.images[id(embedding.features)]
        points, labels = np.asarray(points), np.asarray(labels)
        self.decode_calls.append(len(points))
        masks = []
        for row in range(len(points)):
            positive = points[row][labels[row] == 1][0]
            masks.append(self.region(image, positive, None if boxes is None else boxes[row]))
        logits = torch.where(torch.as_tensor(np.stack(masks)), 10.0, -10.0)
        count = 3 if multimask else 1
        scores = torch.tensor([STUB_IOU - 0.2, STUB_IOU, STUB_IOU - 0.1][:count] if multimask else [STUB_IOU])
        return Decoded(None, scores.expand(len(points), count).clone(),
                       logits[:, None].expand(-1, count, -1, -1).clone())


def canvas(background=BLUE) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:] = background
    return image


def paint(image: np.ndarray, box, colour=RED) -> np.ndarray:
    """Fill the inclusive box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    image[y0: y1 + 1, x0: x1 + 1] = colour
    return image
