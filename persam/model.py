"""PerSAM and PerSAM-F: learn a concept from one (or a few) reference image(s) and masks,
then segment that object in new images with no prompts (docs/method.md sections 3-5)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from contextlib import nullcontext
from typing import Callable, ContextManager, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from sam_core import ImageEmbedding, ImageLike, Sam, SamEngine, build_sam, load_image, model_fingerprint

from .cache import EmbeddingCache, image_key
from .concept import METHODS, Concept, ConceptError
from .find import Detection, calibration_from_scores, detect
from .fit import DEFAULT_STEPS
from .mask_weights import fit_reference_weights, weighted_masks
from .masks import MaskLike, load_mask, mask_box
from .overlaps import winning_logits
from .prior import (MASK_FILL_IMAGE, attention_guidance, best_and_worst_points,
                    max_mean_embedding, reference_grid, mean_embedding, normalized,
                    similarity_map, target_cells, top_k_points)
from .reference import mask_from_prompts
from .refine import cascaded_refinement_batch


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

    mask: (H, W) bool, always ``logits > 0``; score: SAM's predicted IoU of the mask it
    decoded; points: (N, 2) (x, y) prompt points with labels (N,) (1 object, 0 background);
    box: the last box prompt (x0, y0, x1, y1) or None; logits: (H, W) full-size logits of the
    chosen mask; low_res_logits: (256, 256), SAM's output as decoded.

    After :func:`resolve_overlaps`, ``mask`` and ``logits`` lose the pixels another concept
    won (``(logits > 0) == mask`` still holds), ``pixels_lost`` counts them, and ``score`` and
    ``low_res_logits`` still describe the mask SAM decoded, before those pixels were removed.
    """

    mask: np.ndarray
    score: float
    points: np.ndarray
    labels: np.ndarray
    logits: torch.Tensor
    low_res_logits: torch.Tensor
    box: np.ndarray | None = None
    pixels_lost: int = 0

    @property
    def empty(self) -> bool:
        """True when the mask has no object pixel."""
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
        self._warned_concepts: set[tuple[str, str]] = set()  # (name, fingerprint) already warned about
        # Optional ``timer(stage)`` context manager (e.g. ``StageTimer``) for benchmarks.
        self.timer: Callable[[str], ContextManager] | None = None

    def _stage(self, name: str) -> ContextManager:
        return self.timer(name) if self.timer is not None else nullcontext()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, model_type: str = "auto",
                        device: str | None = None, **kwargs) -> "PerSAM":
        """Build SAM from ``checkpoint`` (a file, a model name such as "vit_t", downloaded and
        checked on first use, or a transformers folder / hub id; ``model_type`` "auto" reads it
        from the weights) on ``device`` (default: the CPU), then this class on it;
        ``kwargs`` go to the constructor (e.g. ``cache_size``, ``fit_steps``)."""
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

    # -- references from clicks ----------------------------------------------------------
    def reference_mask(self, image: ImageLike, points=None, labels=None, box=None) -> np.ndarray:
        """The object at the prompts as an (H, W) bool mask, made by SAM (multimask, highest
        predicted IoU). points: (N, 2) (x, y) pixels; labels: (N,) 1 object / 0 background
        (default all 1); box: (x0, y0, x1, y1). The image embedding is cached, so ``learn`` on
        the same image afterwards does not encode it again. The mask may be empty."""
        _, embedding = self.embed(image)
        with self._stage("decode"):
            return mask_from_prompts(self.engine, embedding, points, labels, box)

    # -- learning ------------------------------------------------------------------------
    def learn(self, image: ImageLike | Sequence[tuple[ImageLike, MaskLike]], mask: MaskLike | None = None,
              method: str | None = None, name: str = "") -> Concept:
        """Learn a concept from a reference image and its mask, or from a list of
        (image, mask) pairs (few-shot: the target cells of all references are pooled).

        ``method``: "persam" (training-free) or "persam-f" (fits the two mask weights on the
        references); the model's default when None. ``name`` is stored in the concept.
        """
        method = method or self.method
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if mask is not None:
            pairs = [(image, mask)]
        elif _is_one_image(image):
            raise TypeError("learn() needs the reference's mask: learn(image, mask), "
                            "or a list of (image, mask) pairs")
        else:
            pairs = list(image)  # type: ignore[arg-type]
            if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
                raise TypeError("learn() takes a list of (image, mask) pairs; for one reference, "
                                "learn(image, mask)")
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
        return fit_reference_weights(self.engine.decode, references, target_feature, self.fit_steps,
                                     stage=self._stage)

    # -- segmentation --------------------------------------------------------------------
    def check_concept(self, concept: Concept, *, stacklevel: int = 2) -> None:
        """Refuse a concept learned with another SAM type (:class:`ConceptError`); warn, once per
        concept, about one learned with another checkpoint of this type (``stacklevel`` as
        for :func:`warnings.warn`, counted from the caller of this method)."""
        label = f"concept '{concept.name}'" if concept.name else "concept"
        if concept.model_type != self.model_type:
            raise ConceptError(f"{label} was learned with SAM {concept.model_type}, "
                               f"but this model is {self.model_type}")
        key = (concept.name, concept.fingerprint)
        if concept.fingerprint != self.fingerprint and key not in self._warned_concepts:
            self._warned_concepts.add(key)
            warnings.warn(f"{label} was learned with a different checkpoint of SAM {self.model_type}; "
                          "results may be poor", stacklevel=stacklevel + 1)

    def segment(self, image: ImageLike, concept: Concept) -> Segmentation:
        """Find the concept's object in ``image``."""
        self.check_concept(concept, stacklevel=2)
        _, embedding = self.embed(image)
        return self.segment_embedding(embedding, concept)

    def segment_many(self, image: ImageLike, concepts: Sequence[Concept]) -> list[Segmentation]:
        """Segment several concepts in one image with one encoder pass, their similarity maps
        in one matrix product and one decoder call per step for all concepts of a method
        (:meth:`segment_embedding_many`). Where masks overlap, the pixel goes to the concept
        with the higher logit (:func:`resolve_overlaps`)."""
        for concept in concepts:
            self.check_concept(concept, stacklevel=2)
        _, embedding = self.embed(image)
        results = self.segment_embedding_many(embedding, concepts)
        resolve_overlaps(results)
        return results

    def segment_embedding(self, embedding: ImageEmbedding, concept: Concept) -> Segmentation:
        """Segment from an already computed embedding."""
        return self.segment_embedding_many(embedding, [concept])[0]

    def segment_embedding_many(self, embedding: ImageEmbedding,
                               concepts: Sequence[Concept]) -> list[Segmentation]:
        """Each concept's own segmentation (overlaps not resolved), equal to
        :meth:`segment_embedding` per concept up to float rounding of the batched products."""
        if not concepts:
            return []
        with self._stage("prior"):
            targets = torch.stack([concept.target_feature for concept in concepts])
            sims = similarity_map(embedding, targets.to(self.engine.device))  # (K, H, W)
        results: list[Segmentation | None] = [None] * len(concepts)
        for method, segment_group in (("persam", self._segment_persam), ("persam-f", self._segment_persam_f)):
            rows = [row for row, concept in enumerate(concepts) if concept.method == method]
            if rows:
                group = segment_group(embedding, [concepts[row] for row in rows], sims[rows])
                for row, result in zip(rows, group):
                    results[row] = result
        return results  # type: ignore[return-value]

    # -- all instances and presence (docs/method.md 11) ---------------------------------------------
    def find(self, image: ImageLike, concept: Concept, threshold: float | None = None,
             max_instances: int = 10) -> Detection:
        """Every instance of the concept's object in ``image`` and whether it is there at all.
        ``threshold`` None: the concept's calibrated threshold, else ``DEFAULT_THRESHOLD``."""
        self.check_concept(concept, stacklevel=2)
        _, embedding = self.embed(image)
        return self.find_embedding(embedding, concept, threshold, max_instances)

    def find_many(self, image: ImageLike, concepts: Sequence[Concept], threshold: float | None = None,
                  max_instances: int = 10) -> list[Detection]:
        """:meth:`find` for several concepts with one encoder pass."""
        for concept in concepts:
            self.check_concept(concept, stacklevel=2)
        _, embedding = self.embed(image)
        return self.find_many_embedding(embedding, concepts, threshold, max_instances)

    def find_embedding(self, embedding: ImageEmbedding, concept: Concept, threshold: float | None = None,
                       max_instances: int = 10) -> Detection:
        """:meth:`find` on an already computed embedding."""
        self.check_concept(concept, stacklevel=2)
        return detect(self.engine, embedding, concept, threshold, max_instances, self._stage)

    def find_many_embedding(self, embedding: ImageEmbedding, concepts: Sequence[Concept],
                            threshold: float | None = None, max_instances: int = 10) -> list[Detection]:
        """:meth:`find_many` on an already computed embedding."""
        return [self.find_embedding(embedding, concept, threshold, max_instances) for concept in concepts]

    def presence_scores(self, images: Iterable[ImageLike], concept: Concept, max_instances: int = 10,
                        progress: Callable[[Iterable], Iterable] | None = None) -> list[float]:
        """Each image's best instance score (0.0 when there is no candidate), before any threshold.
        The score is SAM's predicted IoU times the similarity factor, so it is usually in 0..1,
        but SAM's predicted IoU is not bounded and can fall below 0."""
        images = _image_list(images)
        images = progress(images) if progress is not None else images
        return [self.find(image, concept, threshold=float("-inf"), max_instances=max_instances).score
                for image in images]

    def calibrate(self, concept: Concept, positives: Sequence[ImageLike], negatives: Sequence[ImageLike],
                  max_instances: int = 10, progress: Callable[[Iterable], Iterable] | None = None) -> Concept:
        """A copy of ``concept`` with a presence threshold chosen on images that show the object
        (``positives``) and images that do not (``negatives``); see ``Calibration``."""
        positives, negatives = _image_list(positives), _image_list(negatives)
        if not positives or not negatives:
            raise ValueError("calibration needs at least one positive and one negative image")
        scores = [self.presence_scores(images, concept, max_instances, progress) for images in (positives, negatives)]
        return replace(concept, calibration=calibration_from_scores(*scores))

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

    def _segment_persam(self, embedding: ImageEmbedding, concepts: Sequence[Concept],
                        sims: torch.Tensor) -> list[Segmentation]:
        """docs/method.md 3.3-3.6 for K PerSAM concepts with (K, H, W) similarity maps: positive/negative
        prior, guided first decode, two refinements (one decoder call per step for all)."""
        device = self.engine.device
        with self._stage("prior"):
            points = np.array([best_and_worst_points(sim) for sim in sims])  # (K, 2, 2)
            labels = np.tile(np.array([1, 0]), (len(concepts), 1))
            attn_sim = torch.cat([attention_guidance(sim) for sim in sims])  # (K, 1, 1, 4096)
            targets = torch.stack([concept.target_embedding for concept in concepts])
        with self._stage("decode"):
            first = self.engine.decode_batch(
                embedding, points, labels, multimask=False, attn_sim=attn_sim,
                target_embedding=targets.to(device).reshape(len(concepts), 1, -1),
            )

            def first_result(row: int) -> Callable[[], Segmentation]:  # upsampled only if a fallback needs it
                return lambda: self._result(embedding, first.low_res_logits[row, 0], first.scores[row, 0],
                                            points[row], labels[row])

            return self._cascade(embedding, points, labels, first.low_res_logits[:, 0], None,
                                 [first_result(row) for row in range(len(concepts))])

    def _segment_persam_f(self, embedding: ImageEmbedding, concepts: Sequence[Concept],
                          sims: torch.Tensor) -> list[Segmentation]:
        """docs/method.md 4 for K PerSAM-F concepts: positive prior only, weighted multimask decode, two
        refinements with boxes (one decoder call per step for all)."""
        with self._stage("prior"):
            points = np.stack([top_k_points(sim, 1) for sim in sims])  # (K, 1, 2)
            labels = np.ones((len(concepts), 1), dtype=np.int64)
        with self._stage("decode"):
            first = self.engine.decode_batch(embedding, points, labels, multimask=True)
            results: list[Segmentation | None] = [None] * len(concepts)
            rows, low_inputs, boxes, earlier = [], [], [], []
            for row, concept in enumerate(concepts):
                high_res = self.engine.upsample(embedding, first.low_res_logits[row])  # (3, H, W)
                logits, low_res = weighted_masks(high_res, first.low_res_logits[row], concept.mask_weights)
                score = float((first.scores[row] * concept.mask_weights.to(first.scores)).sum())
                weighted = self._result(embedding, low_res, score, points[row], labels[row], logits=logits)
                box = mask_box(weighted.mask)
                if box is None:
                    results[row] = self._empty(embedding, points[row], labels[row])
                    continue
                rows.append(row)
                low_inputs.append(low_res)
                boxes.append(box)
                earlier.append(lambda weighted=weighted: weighted)
            if rows:
                refined = self._cascade(embedding, points[rows], labels[rows], torch.stack(low_inputs),
                                        boxes, earlier)
                for row, result in zip(rows, refined):
                    results[row] = result
            return results  # type: ignore[return-value]

    def _cascade(self, embedding: ImageEmbedding, points: np.ndarray, labels: np.ndarray,
                 mask_input: torch.Tensor, first_boxes: list[np.ndarray] | None,
                 earlier: list[Callable[[], Segmentation]]) -> list[Segmentation]:
        """docs/method.md 3.6 steps 2-3 for B prompt sets; where a mask that should give a box is empty,
        that set's last non-empty result (``earlier[i]()``), or an empty mask."""
        refined = cascaded_refinement_batch(self.engine.decode_batch, self.engine.upsample, embedding,
                                            points, labels, mask_input, first_boxes)
        results = []
        for row, item in enumerate(refined):
            if item is None:
                fallback = earlier[row]()
                results.append(fallback if not fallback.empty else self._empty(embedding, points[row], labels[row]))
            else:
                results.append(self._result(embedding, item.low_res_logits, item.score, points[row], labels[row],
                                            box=item.box, logits=item.logits))
        return results


class PerSAMF(PerSAM):
    """PerSAM-F: PerSAM plus two learned weights that mix SAM's three mask scales,
    fitted on the reference in 1000 AdamW steps on cached decoder outputs (SAM stays frozen)."""

    method = "persam-f"


def _is_one_image(value: object) -> bool:
    return isinstance(value, (str, os.PathLike, np.ndarray, Image.Image))


def _image_list(images: Iterable[ImageLike] | ImageLike) -> list[ImageLike]:
    """A list of images; one image (a path, array or PIL image) given alone is a list of one."""
    return [images] if _is_one_image(images) else list(images)  # type: ignore[list-item]


def resolve_overlaps(results: Iterable[Segmentation]) -> None:
    """Make masks disjoint in place: a pixel claimed by several goes to the higher logit
    (ties to the earlier result).

    A result that loses a pixel gets logit ``own - winner`` (<= 0) there, so its ``mask`` and
    ``logits > 0`` stay the same pixels, and ``pixels_lost`` grows by the pixels it lost; its
    ``score`` (SAM's predicted IoU) is left as SAM gave it for the decoded mask.
    """
    results = list(results)
    if len(results) < 2:
        return
    winner, best = winning_logits([r.logits for r in results], results[0].mask.shape)
    for index, result in enumerate(results):
        lost = torch.from_numpy(result.mask) & (winner != index + 1)
        if not bool(lost.any()):
            continue
        own = result.logits
        below_winner = (own.float().cpu() - best).clamp(max=0.0).to(own.device, own.dtype)
        result.logits = torch.where(lost.to(own.device), below_winner, own)
        result.mask = result.mask & ~lost.numpy()
        result.pixels_lost += int(lost.sum())


def label_map(results: Sequence[Segmentation]) -> np.ndarray:
    """(H, W) uint8 map: 0 background, i + 1 where ``results[i]``'s mask is."""
    if not results:
        raise ValueError("no segmentations")
    labels = np.zeros(results[0].mask.shape, np.uint8)
    for index, result in enumerate(results):
        labels[result.mask] = index + 1
    return labels
