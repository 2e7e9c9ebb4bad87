"""sam_core: a self-contained Segment Anything (SAM ViT-H/L/B and MobileSAM ViT-T).

Knows nothing of personalization. Entry points: :func:`build_sam` and :class:`SamEngine`.
"""
from .build import (MODEL_CONFIGS, MODEL_TYPES, CheckpointError, TinyViTConfig, ViTConfig,
                    build_sam, build_sam_model, infer_config, read_state_dict, resolve_device)
from .engine import Decoded, ImageEmbedding, SamEngine, model_fingerprint
from .hf_convert import save_transformers_folder
from .image_io import ImageLike, ImageReadError, load_image
from .weights import (DEFAULT_MODEL, OFFICIAL_MODELS, DownloadError, ModelEntry, model_entries,
                      resolve_checkpoint)
from .runtime import (onednn_gelu_fusion_enabled, onednn_linear_enabled, prepare_vector_math,
                      set_onednn_linear)
from .sam import Sam
from .transforms import (IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD, normalize_and_pad, postprocess_masks,
                         preprocess_image, resize_uint8, resized_shape)

__all__ = [
    "MODEL_CONFIGS", "MODEL_TYPES", "CheckpointError", "TinyViTConfig", "ViTConfig", "build_sam",
    "build_sam_model", "infer_config", "read_state_dict", "resolve_device", "Decoded",
    "ImageEmbedding", "SamEngine", "model_fingerprint", "ImageLike", "ImageReadError", "load_image", "Sam",
    "IMAGE_SIZE", "PIXEL_MEAN", "PIXEL_STD", "normalize_and_pad", "postprocess_masks", "preprocess_image",
    "resize_uint8", "resized_shape",
    "DEFAULT_MODEL", "OFFICIAL_MODELS", "DownloadError", "ModelEntry", "model_entries",
    "resolve_checkpoint", "save_transformers_folder", "onednn_linear_enabled", "onednn_gelu_fusion_enabled",
    "set_onednn_linear", "prepare_vector_math",
]

prepare_vector_math()  # before any parallel torch.sqrt / sin / exp (runtime.py)
