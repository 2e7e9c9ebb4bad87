"""Test-only parity references: the official SAM / MobileSAM code and a written-out decoder.

Nothing here is shipped with the library; only tests import it. See ``official.py`` (loading
and building the official models, random checkpoints in the official layout) and ``hooks.py``
(reference mask decoder with PerSAM's target-guided attention and target-semantic prompting).
"""

from .hooks import reference_mask_decoder_with_hooks
from .official import (
    OFFICIAL_PACKAGES,
    VIT_CONFIGS,
    build_official_sam,
    load_official,
    load_official_checkpoint,
    random_official_sam,
    random_state_dict,
    save_random_checkpoint,
)

__all__ = [
    "OFFICIAL_PACKAGES",
    "VIT_CONFIGS",
    "build_official_sam",
    "load_official",
    "load_official_checkpoint",
    "random_official_sam",
    "random_state_dict",
    "save_random_checkpoint",
    "reference_mask_decoder_with_hooks",
]
