"""The SAM network: image encoder, prompt encoder and mask decoder under one module.

Parameter names match the official checkpoints (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``). Pre/post-processing lives in ``transforms.py``; the stateless
encode/decode API in ``engine.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Container for the three SAM parts; ``model_type`` names the released variant."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, model_type: str = "custom") -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.model_type = model_type

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device
