"""A small, bounded cache of image embeddings keyed by image content."""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from sam_core import ImageEmbedding


def image_key(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 array (shape included)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class EmbeddingCache:
    """Least-recently-used cache of :class:`ImageEmbedding`, at most ``capacity`` entries
    (each is a 4 MiB feature map for SAM's 256x64x64 output)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ImageEmbedding | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = embedding
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
