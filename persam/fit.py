"""PerSAM-F: fitting the two mask-scale weights (SPEC section 4).

SAM is frozen and its inputs are fixed during fitting, so the three full-size logit maps
are decoded once and the 1000 optimizer steps run on them. The loss and its gradient with
respect to the two weights are computed by hand in one pass over the pixels (chunked so
the working set stays in cache), instead of an autograd graph over millions of pixels;
the update itself is torch's AdamW with its cosine schedule, as in the paper's code.
"""
from __future__ import annotations

import torch

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2  # the closed-form gradient below is written for gamma = 2
DEFAULT_STEPS = 1000
DEFAULT_LR = 1e-3
DEFAULT_EPS = 1e-4
_CHUNK = 1 << 14  # pixels per chunk: the temporaries of one chunk stay in L2


def initial_weights() -> torch.Tensor:
    """The two free weights (w1, w2) = (1/3, 1/3), as a (2, 1) tensor; w0 = 1 - w1 - w2."""
    return torch.ones(2, 1) / 3


def full_weights(free: torch.Tensor) -> torch.Tensor:
    """(2, 1) free weights -> (3, 1) weights (1 - w1 - w2, w1, w2)."""
    return torch.cat((1 - free.sum(0).unsqueeze(0), free), dim=0)


class _PixelSet:
    """Logits of one reference split by target value, flattened and contiguous.

    Keeps the three maps (to form s exactly as a weighted sum) and the differences
    L1 - L0, L2 - L0, which are ds/dw1 and ds/dw2 since w0 = 1 - w1 - w2.
    """

    def __init__(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        flat = logits.reshape(3, -1).float()
        target = target.reshape(-1).bool()
        self.count = flat.shape[1]
        self.target_sum = float(target.sum())
        self.blocks = []
        for is_target in (True, False):
            maps = flat[:, target if is_target else ~target].contiguous()
            self.blocks.append((is_target, maps, (maps[1:] - maps[0:1]).contiguous()))


def _combine(logits: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    # Same order of float operations as summing logits * weights over the three maps.
    return (logits[0] * w0 + logits[1] * w1) + logits[2] * w2


def loss_and_grad(pixels: _PixelSet, free: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Dice + sigmoid focal loss of the weighted logits and its gradient w.r.t. (w1, w2).

    With s = sum_k w_k L_k and p = sigmoid(s):
    dice = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1);
    focal = mean over pixels of alpha_t (1 - p_t)^2 BCE(s, t), alpha_t = 0.25 on the object.
    One pass: the dice gradient's per-class factor depends on global sums, so the pass
    collects sum(p), sum(p q dS/dw) per class and the focal terms, and they are combined after.
    """
    w0, w1, w2 = full_weights(free)[:, 0]
    sum_p = {True: 0.0, False: 0.0}
    dice_dir = {True: torch.zeros(2, dtype=torch.float64), False: torch.zeros(2, dtype=torch.float64)}
    focal_dir = torch.zeros(2, dtype=torch.float64)
    focal = 0.0
    for is_target, maps, diffs in pixels.blocks:
        for start in range(0, maps.shape[1], _CHUNK):
            s = _combine(maps[:, start:start + _CHUNK], w0, w1, w2)
            d = diffs[:, start:start + _CHUNK]
            p = torch.sigmoid(s)
            q = 1 - p
            if is_target:  # p_t = p, BCE = softplus(-s)
                ce = torch.nn.functional.softplus(-s)
                focal += FOCAL_ALPHA * float((q * q * ce).sum(dtype=torch.float64))
                dfocal = (q * q) * (2 * p * ce + q) * (-FOCAL_ALPHA)
            else:  # p_t = 1 - p, BCE = softplus(s)
                ce = torch.nn.functional.softplus(s)
                focal += (1 - FOCAL_ALPHA) * float((p * p * ce).sum(dtype=torch.float64))
                dfocal = (p * p) * (2 * q * ce + p) * (1 - FOCAL_ALPHA)
            sum_p[is_target] += float(p.sum(dtype=torch.float64))
            dice_dir[is_target] += (d @ (p * q)).double()
            focal_dir += (d @ dfocal).double()
    numerator = 2 * sum_p[True] + 1
    denominator = sum_p[True] + sum_p[False] + pixels.target_sum + 1
    # d dice / d p_i = -(2 t_i D - N) / D^2, and dp/ds = p q.
    grad = (focal_dir / pixels.count
            - dice_dir[True] * (2 * denominator - numerator) / denominator ** 2
            + dice_dir[False] * numerator / denominator ** 2)
    loss = 1 - numerator / denominator + focal / pixels.count
    return loss, grad.to(torch.float32).reshape(2, 1)


def fit_mask_weights(
    references: list[tuple[torch.Tensor, torch.Tensor]],
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Fit PerSAM-F's weights on cached decoder outputs.

    references: (logits, target) pairs with logits (3, H, W) full-size multimask logits of the
    reference image decoded from its positive location prior, and target (H, W) its mask.
    With several references the loss is their mean. Returns the (3,) weights
    (1 - w1 - w2, w1, w2).
    """
    pixel_sets = [_PixelSet(logits, target) for logits, target in references]
    free = torch.nn.Parameter(initial_weights())
    optimizer = torch.optim.AdamW([free], lr=lr, eps=eps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        grad = torch.zeros(2, 1)
        for pixels in pixel_sets:
            grad += loss_and_grad(pixels, free.detach())[1]
        free.grad = grad / len(pixel_sets)
        optimizer.step()
        scheduler.step()
    return full_weights(free.detach())[:, 0]
