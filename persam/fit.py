"""PerSAM-F: fitting the two mask-scale weights (docs/method.md 4).

SAM is frozen and its inputs are fixed during fitting, so the three full-size logit maps
are decoded once and the 1000 optimizer steps run on them. The loss and its gradient with
respect to the two weights are computed by hand in one pass over the pixels (chunked so
the working set stays in cache), instead of an autograd graph over millions of pixels;
the update is ``torch.optim.AdamW`` with ``CosineAnnealingLR``, as in the paper's code.

An earlier version answered most steps from a Chebyshev interpolant of this gradient (it is
an analytic function of two numbers). Measured against this loop (README, "Speed"), it only
paid off on logits of small magnitude, such as a random checkpoint's (4-10x); on logits of the
size a trained SAM produces it was at best 3x and mostly fell back to exact steps, buying
nothing, so it was removed in favour of this plain loop.
"""
from __future__ import annotations

import torch

FOCAL_ALPHA = 0.25  # weight of object pixels in the focal loss (background: 1 - alpha)
FOCAL_GAMMA = 2  # the closed-form gradient below is written for gamma = 2
DICE_SMOOTHING = 1.0  # added to the dice numerator and denominator
DEFAULT_STEPS = 1000  # the paper's number of AdamW steps
DEFAULT_LR = 1e-3
DEFAULT_EPS = 1e-4
_CHUNK = 1 << 17  # pixels per chunk: big enough for two threads, small enough to stay in cache


def initial_weights() -> torch.Tensor:
    """The two free weights (w1, w2) = (1/3, 1/3), as a (2, 1) tensor; w0 = 1 - w1 - w2."""
    return torch.ones(2, 1) / 3


def full_weights(free: torch.Tensor) -> torch.Tensor:
    """(2, 1) free weights -> (3, 1) weights (1 - w1 - w2, w1, w2)."""
    return torch.cat((1 - free.sum(0).unsqueeze(0), free), dim=0)


class _PixelSet:
    """One reference's logits split by target value.

    For each class (object pixels, background pixels) it keeps the three maps as a
    contiguous (3, n) block.
    """

    def __init__(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        flat = logits.reshape(3, -1).float()
        target = target.reshape(-1).bool()
        self.count = flat.shape[1]
        self.target_sum = float(target.sum())
        self.blocks = []
        for is_target in (True, False):
            maps = flat[:, target if is_target else ~target].contiguous()
            self.blocks.append((is_target, maps))


class _Workspace:
    """Reusable chunk buffers: fresh multi-megabyte tensors every step would cost page faults."""

    def __init__(self, size: int) -> None:
        self.buffers = [torch.empty(size) for _ in range(4)]
        self.pair = torch.empty(2, size)  # rows: dp/ds and d focal/ds, for one product with dS/dw

    def views(self, size: int) -> list[torch.Tensor]:
        return [buffer[:size] for buffer in self.buffers] + [self.pair[:, :size]]


def loss_and_grad(pixels: _PixelSet, free: torch.Tensor,
                  workspace: _Workspace | None = None) -> tuple[float, torch.Tensor]:
    """Dice + sigmoid focal loss of the weighted logits and its gradient w.r.t. (w1, w2).

    With s = sum_k w_k L_k, p = sigmoid(s), t the target:
    dice = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1);
    focal = mean over pixels of alpha_t (1 - p_t)^2 BCE(s, t), alpha_t = 0.25 on the object.

    Both classes are handled by one formula in z = s (background) or z = -s (object):
    a = sigmoid(z) is the probability of the wrong class, b = 1 - a, BCE = softplus(z), and
    d focal / ds = (dz/ds) alpha_t a^2 (a + 2 b BCE), d p / ds = a b. The dice gradient's
    per-class factor needs the global sums, so one pass collects sum(a), sum(a b dS/dw) and
    the focal terms per class, combined at the end.
    """
    w0, w1, w2 = (float(w) for w in full_weights(free)[:, 0].float())
    workspace = workspace or _Workspace(min(_CHUNK, pixels.count))
    sum_p = {}
    dice_dir = {}
    focal_dir = torch.zeros(2, dtype=torch.float64)
    focal = 0.0
    for is_target, maps in pixels.blocks:
        sign = -1.0 if is_target else 1.0  # dz/ds
        alpha = FOCAL_ALPHA if is_target else 1 - FOCAL_ALPHA
        wrong_sum = 0.0
        per_map = torch.zeros(3, 2, dtype=torch.float64)  # sum over pixels of L_k * [dp/ds, dfocal/ds]
        for start in range(0, maps.shape[1], _CHUNK):
            end = min(start + _CHUNK, maps.shape[1])
            z, a, ce, aa, pair = workspace.views(end - start)
            b, g = pair[0], pair[1]
            # s in the order of the weighted sum over the three maps; z = sign * s exactly.
            torch.mul(maps[0, start:end], w0 * sign, out=z)
            z.add_(maps[1, start:end], alpha=w1 * sign).add_(maps[2, start:end], alpha=w2 * sign)
            torch.sigmoid(z, out=a)
            torch.sub(1.0, a, out=b)
            torch.nn.functional.softplus(z, out=ce)  # BCE with logits, for either class
            torch.mul(a, a, out=aa)
            focal += alpha * float(torch.dot(aa, ce))
            torch.addcmul(a, b, ce, value=2.0, out=g)
            g.mul_(aa)
            wrong_sum += float(a.sum(dtype=torch.float64))
            b.mul_(a)  # now a b = dp/ds
            per_map += torch.mm(maps[:, start:end], pair.t()).double()
        # ds/dw_k = L_k - L_0 (w0 = 1 - w1 - w2), the same difference of sums autograd forms.
        directions = per_map[1:] - per_map[0:1]
        count = maps.shape[1]
        sum_p[is_target] = count - wrong_sum if is_target else wrong_sum
        dice_dir[is_target] = directions[:, 0]
        focal_dir += directions[:, 1] * (sign * alpha)
    numerator = 2 * sum_p[True] + DICE_SMOOTHING
    denominator = sum_p[True] + sum_p[False] + pixels.target_sum + DICE_SMOOTHING
    # d dice / d p_i = -(2 t_i D - N) / D^2
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
    (1 - w1 - w2, w1, w2). AdamW (torch's defaults otherwise) and the cosine schedule are the
    paper's; the gradient is :func:`loss_and_grad`'s instead of autograd's.
    """
    pixel_sets = [_PixelSet(logits, target) for logits, target in references]
    workspace = _Workspace(min(_CHUNK, max(p.count for p in pixel_sets)))
    free = torch.nn.Parameter(initial_weights())
    optimizer = torch.optim.AdamW([free], lr=lr, eps=eps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        grads = [loss_and_grad(pixels, free.detach(), workspace)[1] for pixels in pixel_sets]
        free.grad = sum(grads) / len(grads)
        optimizer.step()
        schedule.step()
    return full_weights(free.detach())[:, 0]
