"""sam_core: a self-contained Segment Anything (SAM ViT-H/L/B and MobileSAM ViT-T).

Knows nothing of personalization. Entry points: :func:`build_sam` and :class:`SamEngine`.
"""
from .build import (MODEL_CONFIGS, MODEL_TYPES, CheckpointError, TinyViTConfig, ViTConfig,
                    build_sam, build_sam_model, infer_config, read_state_dict, resolve_device)
from .engine import Decoded, ImageEmbedding, SamEngine, model_fingerprint
from .hf_convert import save_transformers_folder
from .weights import (DEFAULT_MODEL, OFFICIAL_MODELS, DownloadError, ModelEntry, model_entries,
                      resolve_checkpoint)
from .image_io import ImageReadError, load_image
from .sam import Sam

__all__ = [
    "MODEL_CONFIGS", "MODEL_TYPES", "CheckpointError", "TinyViTConfig", "ViTConfig", "build_sam",
    "build_sam_model", "infer_config", "read_state_dict", "resolve_device", "Decoded",
    "ImageEmbedding", "SamEngine", "model_fingerprint", "ImageReadError", "load_image", "Sam",
    "DEFAULT_MODEL", "OFFICIAL_MODELS", "DownloadError", "ModelEntry", "model_entries",
    "resolve_checkpoint", "save_transformers_folder",
]
