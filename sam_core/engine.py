"""Stateless encode -> embedding -> decode API over a SAM model.

Unlike a stateful predictor (set_image, then predict), an :class:`ImageEmbedding` is a
plain value: it can be cached, reused for any number of prompts, and shared between
callers.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .image_io import ImageLike, load_image
from .runtime import tune_memory_allocator
from .sam import Sam
from .transforms import (postprocess_masks, preprocess_image, resized_shape, scale_boxes,
                         scale_coords)


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output for one image.

    features: (1, 256, 64, 64); input_size: (h, w) after resizing (before padding);
    original_size: (H, W) of the image.
    """

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


class Decoded(NamedTuple):
    """Decoder output for one prompt set.

    high_res_logits: (K, H, W) at the original image size, or None when not asked for;
    scores: (K,) predicted IoU; low_res_logits: (K, 256, 256). K = 3 with multimask, else 1.
    """

    high_res_logits: torch.Tensor | None
    scores: torch.Tensor
    low_res_logits: torch.Tensor


class SamEngine:
    """Encode images and decode prompts with a frozen SAM model."""

    def __init__(self, sam: Sam, tune_allocator: bool = True) -> None:
        if tune_allocator:  # see runtime.py: large CPU tensors without page-fault churn
            tune_memory_allocator()
        self.sam = sam.eval()
        for param in self.sam.parameters():
            param.requires_grad_(False)
        self._dense_pe: torch.Tensor | None = None
        self._rows_cache: tuple[weakref.ref, int, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def model_type(self) -> str:
        return self.sam.model_type

    def dense_pe(self) -> torch.Tensor:
        """(1, 256, 64, 64) positional encoding of the embedding grid; a constant, so computed
        once, and kept channels-last: the decoder reads it as rows of channels."""
        if self._dense_pe is None or self._dense_pe.device != self.device:
            with torch.no_grad():
                self._dense_pe = self.sam.prompt_encoder.get_dense_pe().contiguous(
                    memory_format=torch.channels_last)
        return self._dense_pe

    def _channels_last(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` (1, C, h, w) with the same values in channels-last memory, kept for the
        last embedding decoded. The decoder reads the image as rows of C channels; in this
        layout that is a view, not a 4 MiB copy per decoder call (``find`` decodes one
        embedding tens of times)."""
        if features.is_contiguous(memory_format=torch.channels_last):
            return features
        if features.is_inference():  # no version counter to tell an in-place change: no cache
            return features.contiguous(memory_format=torch.channels_last)
        cached = self._rows_cache
        if cached is not None and cached[0]() is features and cached[1] == features._version:
            return cached[2]
        rows = features.contiguous(memory_format=torch.channels_last)
        self._rows_cache = (weakref.ref(features), features._version, rows)
        return rows

    @torch.no_grad()
    def encode(self, image: ImageLike) -> ImageEmbedding:
        """Encode one image (path, PIL image or RGB array)."""
        return self.encode_batch([image])[0]

    @torch.no_grad()
    def encode_batch(self, images: Sequence[ImageLike]) -> list[ImageEmbedding]:
        """Encode several images in one encoder pass: (B, 3, 1024, 1024) -> B embeddings."""
        arrays = [load_image(image) for image in images]
        if not arrays:
            return []
        batch = torch.cat([preprocess_image(a, self.device) for a in arrays])
        features = self.sam.image_encoder(batch)
        return [
            ImageEmbedding(features[i: i + 1], resized_shape(a.shape[:2]), tuple(a.shape[:2]))
            for i, a in enumerate(arrays)
        ]

    def prompt_tensors(self, embedding: ImageEmbedding, points=None, labels=None, box=None):
        """Scale original-image prompts into the model frame, as float32 tensors.

        One prompt set: points (N, 2), labels (N,), box (4,) -> coords (1, N, 2), labels (1, N),
        boxes (1, 4). A batch: points (B, N, 2), labels (B, N), boxes (B, 4) -> the same with B.
        """
        coords = point_labels = boxes = None
        if points is not None:
            if labels is None:
                raise ValueError("point labels are required with points")
            points = np.asarray(points, dtype=np.float64)
            batch_shape = points.shape[:-2] if points.ndim == 3 else (1,)
            coords = torch.as_tensor(scale_coords(points.reshape(-1, 2), embedding.original_size),
                                     dtype=torch.float, device=self.device).reshape(*batch_shape, -1, 2)
            point_labels = torch.as_tensor(np.asarray(labels), dtype=torch.int,
                                           device=self.device).reshape(*batch_shape, -1)
        if box is not None:
            boxes = torch.as_tensor(scale_boxes(np.asarray(box, dtype=np.float64).reshape(-1, 4),
                                                embedding.original_size),
                                    dtype=torch.float, device=self.device)
        return coords, point_labels, boxes

    @torch.no_grad()
    def decode(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | Sequence | None = None,
        labels: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
        mask_input: torch.Tensor | np.ndarray | None = None,
        multimask: bool = True,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
        high_res: bool = True,
    ) -> Decoded:
        """Decode one prompt set.

        points: (N, 2) (x, y) in original-image pixels with labels (N,) (1 object, 0 background);
        box: (4,) x0, y0, x1, y1 in original-image pixels; mask_input: (1, 256, 256) low-res
        logits from an earlier decode. ``attn_sim`` and ``target_embedding`` are PerSAM's
        decoder hooks (see ``transformer.py``). With ``high_res=False`` the full-size
        upsampling is skipped (use :meth:`upsample` on the mask you keep).
        """
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(1, -1, 2)
            labels = None if labels is None else np.asarray(labels).reshape(1, -1)
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(1, 4)
        if mask_input is not None:
            mask_input = torch.as_tensor(mask_input).reshape(1, 256, 256)
        batch = self.decode_batch(embedding, points, labels, box, mask_input, multimask, attn_sim,
                                  target_embedding)
        low_res = batch.low_res_logits[0]
        return Decoded(self.upsample(embedding, low_res) if high_res else None, batch.scores[0], low_res)

    @torch.no_grad()
    def decode_batch(self, embedding: ImageEmbedding, points: np.ndarray | None = None,
                     labels: np.ndarray | None = None, boxes: np.ndarray | None = None,
                     mask_input: torch.Tensor | np.ndarray | None = None, multimask: bool = True,
                     attn_sim: torch.Tensor | None = None,
                     target_embedding: torch.Tensor | None = None) -> Decoded:
        """Decode B prompt sets against one image embedding in one decoder call.

        points (B, N, 2) with labels (B, N) (every set has N points); boxes (B, 4); mask_input
        (B, 256, 256); attn_sim (B or 1, 1, 1, 4096); target_embedding (B or 1, 1, C). Returns
        ``Decoded(None, scores (B, K), low_res_logits (B, K, 256, 256))``: nothing is upsampled
        (use :meth:`upsample` on the masks you keep). Each set's result equals its own
        :meth:`decode` to float rounding (the decoder's matrix products are batched).
        """
        coords, point_labels, box_tensor = self.prompt_tensors(embedding, points, labels, boxes)
        masks = None
        if mask_input is not None:
            masks = torch.as_tensor(mask_input, dtype=torch.float, device=self.device).reshape(-1, 1, 256, 256)
        sparse, dense = self.sam.prompt_encoder(
            points=(coords, point_labels) if coords is not None else None, boxes=box_tensor, masks=masks
        )
        if masks is None:
            # Without mask inputs the dense prompt is the same for every set: keep one copy, so
            # the decoder does the image-only part of its first block once for the whole batch.
            dense = dense[:1]
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=self._channels_last(embedding.features),
            image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
        return Decoded(None, scores, low_res)

    @staticmethod
    def upsample(embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        """(K, 256, 256) or (256, 256) low-res logits -> same leading shape at the original size."""
        squeeze = low_res_logits.ndim == 2
        logits = low_res_logits.reshape(1, -1, *low_res_logits.shape[-2:])
        high = postprocess_masks(logits, embedding.input_size, embedding.original_size)[0]
        return high[0] if squeeze else high


def model_fingerprint(sam: Sam) -> str:
    """A short content hash of a model's weights (prompt encoder, mask decoder and encoder
    neck: enough to tell checkpoints apart without hashing gigabytes)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=12)
    digest.update(sam.model_type.encode())
    state = sam.state_dict()
    for name in sorted(state):
        if name.startswith(("prompt_encoder.", "mask_decoder.", "image_encoder.neck.")):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
