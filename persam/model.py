"""PerSAM and PerSAM-F: learn a concept from one (or a few) reference image(s) and masks,
then segment that object in new images with no prompts (SPEC sections 3-5)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from contextlib import nullcontext
from typing import Callable, ContextManager, Iterable, Sequence

import numpy as np
import torch

from sam_core import ImageEmbedding, Sam, SamEngine, build_sam, load_image, model_fingerprint
from sam_core.image_io import ImageLike

from .cache import EmbeddingCache, image_key
from .concept import METHODS, Concept, ConceptError
from .fit import DEFAULT_STEPS, fit_mask_weights
from .masks import MaskLike, load_mask, mask_box
from .prior import (MASK_FILL_IMAGE, attention_guidance, best_and_worst_points,
                    max_mean_embedding, reference_grid, mean_embedding, normalized,
                    similarity_map, target_cells)
from .refine import cascaded_refinement


# Smallest image side persam accepts. SAM upscales any image to 1024 px, but PerSAM picks its
# prompt points on a similarity map at the image's own size: a 1x1 image has a one-pixel map
# (no spread, NaN statistics) and sides below 16 px leave too few pixels for a point, a
# background point and a box to mean anything.
MIN_IMAGE_SIDE = 16


class ImageSizeError(ValueError):
    """An image too small for persam; the message names the image and the minimum."""


def check_image_size(array: np.ndarray, source: object = None) -> None:
    height, width = array.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        name = f"image {source}" if isinstance(source, (str, os.PathLike)) else "image"
        raise ImageSizeError(f"{name} is {width}x{height} pixels; persam needs at least "
                             f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")


@dataclass
class Segmentation:
    """The object found in one image.

    mask: (H, W) bool; score: SAM's predicted IoU of the chosen mask; points: (N, 2) (x, y)
    prompt points with labels (N,) (1 object, 0 background); box: the last box prompt
    (x0, y0, x1, y1) or None; logits: (H, W) full-size logits of the chosen mask;
    low_res_logits: (256, 256).
    """

    mask: np.ndarray
    score: float
    points: np.ndarray
    labels: np.ndarray
    logits: torch.Tensor
    low_res_logits: torch.Tensor
    box: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())


class PerSAM:
    """Training-free personalization of a frozen SAM (PerSAM); see :class:`PerSAMF` for the
    fine-tuned variant. Stateless apart from a bounded cache of image embeddings, so an image
    used as reference and as test image is encoded once.

    >>> persam = PerSAM(build_sam("vit_t", "mobile_sam.pt"))
    >>> concept = persam.learn("dog.jpg", "dog_mask.png")
    >>> persam.segment("park.jpg", concept).mask
    """

    method = "persam"

    def __init__(self, sam: Sam | SamEngine, cache_size: int = 8, fit_steps: int = DEFAULT_STEPS) -> None:
        self.engine = sam if isinstance(sam, SamEngine) else SamEngine(sam)
        self.cache = EmbeddingCache(cache_size)
        self.fit_steps = fit_steps
        self.fingerprint = model_fingerprint(self.engine.sam)
        # Optional ``timer(stage)`` context manager (e.g. ``StageTimer``) for benchmarks.
        self.timer: Callable[[str], ContextManager] | None = None

    def _stage(self, name: str) -> ContextManager:
        return self.timer(name) if self.timer is not None else nullcontext()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, model_type: str = "auto",
                        device: str | None = None, **kwargs) -> "PerSAM":
        return cls(build_sam(model_type, checkpoint, device=device), **kwargs)

    @property
    def model_type(self) -> str:
        return self.engine.model_type

    # -- images --------------------------------------------------------------------------
    def embed(self, image: ImageLike) -> tuple[np.ndarray, ImageEmbedding]:
        """Load an image and return it with its embedding, encoding it only if not cached."""
        array = load_image(image)
        check_image_size(array, image)
        key = image_key(array)
        embedding = self.cache.get(key)
        if embedding is None:
            with self._stage("encode"):
                embedding = self.engine.encode(array)
            self.cache.put(key, embedding)
        return array, embedding

    # -- learning ------------------------------------------------------------------------
    def learn(self, image: ImageLike | Sequence[tuple[ImageLike, MaskLike]], mask: MaskLike | None = None,
              method: str | None = None, name: str = "") -> Concept:
        """Learn a concept from a reference image and its mask, or from a list of
        (image, mask) pairs (few-shot: the target cells of all references are pooled)."""
        method = method or self.method
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        pairs = [(image, mask)] if mask is not None else list(image)  # type: ignore[arg-type]
        if not pairs:
            raise ValueError("learn() needs at least one (image, mask) pair")
        references = []
        cells = []
        for ref_image, ref_mask in pairs:
            array, embedding = self.embed(ref_image)
            label = str(ref_mask) if isinstance(ref_mask, (str, os.PathLike)) else "reference mask"
            mask_array = load_mask(ref_mask, array.shape[:2], name=label)
            grid = reference_grid(mask_array, label, MASK_FILL_IMAGE)
            cells.append(target_cells(embedding.features, grid))
            references.append((embedding, mask_array))
        pooled = torch.cat(cells)
        target_embedding = mean_embedding(pooled)
        if method == "persam":
            target_feature = normalized(target_embedding)
            weights = None
        else:
            target_feature = normalized(max_mean_embedding(pooled))
            weights = self._fit_weights(references, target_feature)
        return Concept(method=method, target_embedding=target_embedding.cpu(),
                       target_feature=target_feature.cpu(), model_type=self.model_type,
                       fingerprint=self.fingerprint, mask_weights=weights, name=name,
                       num_references=len(pairs))

    def _fit_weights(self, references: list[tuple[ImageEmbedding, np.ndarray]],
                     target_feature: torch.Tensor) -> torch.Tensor:
        """PerSAM-F: decode each reference once from its own positive prior, then fit."""
        cached = []
        for embedding, mask_array in references:
            positive, _ = best_and_worst_points(similarity_map(embedding, target_feature))
            decoded = self.engine.decode(embedding, points=[positive], labels=[1], multimask=True)
            cached.append((decoded.high_res_logits.cpu(), torch.from_numpy(mask_array)))
        with self._stage("fit"):
            return fit_mask_weights(cached, steps=self.fit_steps)

    # -- segmentation --------------------------------------------------------------------
    def check_concept(self, concept: Concept) -> None:
        if concept.model_type != self.model_type:
            label = f"concept '{concept.name}'" if concept.name else "concept"
            raise ConceptError(f"{label} was learned with SAM {concept.model_type}, "
                               f"but this model is {self.model_type}")
        if concept.fingerprint != self.fingerprint:
            warnings.warn("concept was learned with a different checkpoint of the same model type; "
                          "results may be poor", stacklevel=3)

    def segment(self, image: ImageLike, concept: Concept) -> Segmentation:
        """Find the concept's object in ``image``."""
        self.check_concept(concept)
        _, embedding = self.embed(image)
        return self.segment_embedding(embedding, concept)

    def segment_many(self, image: ImageLike, concepts: Sequence[Concept]) -> list[Segmentation]:
        """Segment several concepts in one image with one encoder pass. Where masks overlap,
        the pixel goes to the concept with the higher logit."""
        for concept in concepts:
            self.check_concept(concept)
        _, embedding = self.embed(image)
        results = [self.segment_embedding(embedding, concept) for concept in concepts]
        resolve_overlaps(results)
        return results

    def segment_embedding(self, embedding: ImageEmbedding, concept: Concept) -> Segmentation:
        """Segment from an already computed embedding."""
        if concept.method == "persam-f":
            return self._segment_persam_f(embedding, concept)
        return self._segment_persam(embedding, concept)

    def _result(self, embedding: ImageEmbedding, low_res: torch.Tensor, score: float, points, labels,
                box=None, logits: torch.Tensor | None = None) -> Segmentation:
        if logits is None:
            logits = self.engine.upsample(embedding, low_res)
        return Segmentation(mask=(logits > 0).cpu().numpy(), score=float(score), points=np.asarray(points),
                            labels=np.asarray(labels), logits=logits, low_res_logits=low_res, box=box)

    def _empty(self, embedding: ImageEmbedding, points, labels) -> Segmentation:
        height, width = embedding.original_size
        return Segmentation(mask=np.zeros((height, width), bool), score=0.0, points=np.asarray(points),
                            labels=np.asarray(labels), logits=torch.full((height, width), -1.0),
                            low_res_logits=torch.full((256, 256), -1.0))

    def _segment_persam(self, embedding: ImageEmbedding, concept: Concept) -> Segmentation:
        """SPEC 3.3-3.6: positive/negative prior, guided first decode, two refinements."""
        device = self.engine.device
        with self._stage("prior"):
            sim = similarity_map(embedding, concept.target_feature.to(device))
            positive, negative = best_and_worst_points(sim)
            points, labels = np.array([positive, negative]), np.array([1, 0])
            attn_sim = attention_guidance(sim)
        with self._stage("decode"):
            return self._persam_decode(embedding, concept, points, labels, attn_sim)

    def _persam_decode(self, embedding: ImageEmbedding, concept: Concept, points: np.ndarray,
                       labels: np.ndarray, attn_sim: torch.Tensor) -> Segmentation:
        device = self.engine.device
        first = self.engine.decode(
            embedding, points, labels, multimask=False, attn_sim=attn_sim,
            target_embedding=concept.target_embedding.to(device).reshape(1, 1, -1), high_res=False,
        )

        def first_result() -> Segmentation:  # upsampled only if a fallback needs it
            return self._result(embedding, first.low_res_logits[0], first.scores[0], points, labels)

        return self._cascade(embedding, points, labels, first.low_res_logits[0:1], None, first_result)

    def _segment_persam_f(self, embedding: ImageEmbedding, concept: Concept) -> Segmentation:
        """SPEC 4: positive prior only, weighted multimask decode, two refinements with boxes."""
        device = self.engine.device
        with self._stage("prior"):
            sim = similarity_map(embedding, concept.target_feature.to(device))
            positive, _ = best_and_worst_points(sim)
            points, labels = np.array([positive]), np.array([1])
        with self._stage("decode"):
            return self._persam_f_decode(embedding, concept, points, labels)

    def _persam_f_decode(self, embedding: ImageEmbedding, concept: Concept, points: np.ndarray,
                         labels: np.ndarray) -> Segmentation:
        device = self.engine.device
        first = self.engine.decode(embedding, points, labels, multimask=True)
        weights = concept.mask_weights.to(device).float()
        # Weighted as in the reference code: each full-size map, then the sum.
        logits = (first.high_res_logits * weights[:, None, None]).sum(0)
        low_res = (first.low_res_logits * weights[:, None, None]).sum(0)
        weighted = self._result(embedding, low_res, float((first.scores * weights).sum()), points, labels,
                                logits=logits)
        box = mask_box(weighted.mask)
        if box is None:
            return self._empty(embedding, points, labels)
        return self._cascade(embedding, points, labels, low_res[None], box, lambda: weighted)

    def _cascade(self, embedding: ImageEmbedding, points: np.ndarray, labels: np.ndarray,
                 mask_input: torch.Tensor, first_box: np.ndarray | None,
                 earlier: Callable[[], Segmentation]) -> Segmentation:
        """SPEC 3.6 steps 2-3; if a mask that should give a box is empty, the last non-empty
        result (``earlier()``), or an empty mask."""
        refined = cascaded_refinement(self.engine.decode, self.engine.upsample, embedding, points,
                                      labels, mask_input, first_box)
        if refined is None:
            fallback = earlier()
            return fallback if not fallback.empty else self._empty(embedding, points, labels)
        return self._result(embedding, refined.low_res_logits, refined.score, points, labels,
                            box=refined.box, logits=refined.logits)


class PerSAMF(PerSAM):
    """PerSAM-F: PerSAM plus two learned weights that mix SAM's three mask scales,
    fitted on the reference in 1000 AdamW steps on cached decoder outputs (SAM stays frozen)."""

    method = "persam-f"


def resolve_overlaps(results: Iterable[Segmentation]) -> None:
    """Make masks disjoint in place: a pixel claimed by several goes to the higher logit."""
    results = list(results)
    if len(results) < 2:
        return
    logits = torch.stack([r.logits.float().cpu() for r in results])
    masks = torch.stack([torch.from_numpy(r.mask) for r in results])
    winner = torch.where(masks, logits, torch.tensor(float("-inf"))).argmax(0)
    for index, result in enumerate(results):
        result.mask = result.mask & (winner == index).numpy()


def label_map(results: Sequence[Segmentation]) -> np.ndarray:
    """(H, W) uint8 map: 0 background, i + 1 where ``results[i]``'s mask is."""
    if not results:
        raise ValueError("no segmentations")
    labels = np.zeros(results[0].mask.shape, np.uint8)
    for index, result in enumerate(results):
        labels[result.mask] = index + 1
    return labels
