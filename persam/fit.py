"""PerSAM-F: fitting the two mask-scale weights (SPEC section 4).

SAM is frozen and its inputs are fixed during fitting, so the three full-size logit maps
are decoded once and the 1000 optimizer steps run on them. The loss and its gradient with
respect to the two weights are computed by hand in one pass over the pixels (chunked so
the working set stays in cache), instead of an autograd graph over millions of pixels;
the update is AdamW with a cosine schedule, as in the paper's code (the same arithmetic as
torch's classes, without their import cost).

Why a Chebyshev interpolant of the gradient: even written by hand, one exact gradient is a
pass over every pixel of three full-size maps (1-4 million pixels for PerSeg's photos), and
the paper's recipe takes 1000 steps, so the exact fit costs roughly ten seconds per
megapixel on our 2-core machines - more than segmenting the object in a dozen images. But the gradient
is a smooth (analytic) function of just two numbers, and AdamW at lr 1e-3 moves them only a
little per step. So :class:`_GradientModel` evaluates the exact gradient on a 9 x 9 grid of
Chebyshev nodes in a small square around the current weights, sized from how fast the pixels'
logits can approach a singularity of sigmoid/softplus so that the interpolant is accurate to
~1e-8, checks it against one more exact evaluation, and then answers every step that stays in
the square from the interpolant (a few dozen float operations). Steps leaving the square build
a new one; where squares would cost more than exact steps, it falls back to exact steps for
good, so it is never much slower than ``exact=True``. ``scripts/bench_fit.py`` measures it
against ``exact=True`` and against a plain ``torch.optim.AdamW`` loop on the exact gradient
(numbers in the README, "Speed"): 3-7x faster at 0.25-1 Mpx and logit ranges up to a trained
SAM's, weights equal to within 1e-6; no gain on saturated logits (+-100), where it falls back.
"""
from __future__ import annotations

import math

import numpy as np
import torch

FOCAL_ALPHA = 0.25  # weight of object pixels in the focal loss (background: 1 - alpha)
FOCAL_GAMMA = 2  # the closed-form gradient below is written for gamma = 2
DICE_SMOOTHING = 1.0  # added to the dice numerator and denominator
DEFAULT_STEPS = 1000  # the paper's number of AdamW steps
DEFAULT_LR = 1e-3
DEFAULT_EPS = 1e-4
ADAMW_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, which the paper keeps
ADAMW_WEIGHT_DECAY = 1e-2
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


class _AdamW:
    """AdamW (decoupled weight decay) with a cosine-annealed learning rate, for one tensor.

    The same float operations as ``torch.optim.AdamW`` (its CPU single-tensor update) driven
    by ``CosineAnnealingLR`` (its recursive form), written out because building a torch
    optimizer costs ~1 s of one-time imports per process, longer than the whole fit on
    small images. Tested against torch's classes.
    """

    def __init__(self, param: torch.Tensor, lr: float, steps: int, eps: float,
                 betas: tuple[float, float] = ADAMW_BETAS, weight_decay: float = ADAMW_WEIGHT_DECAY) -> None:
        self.param = param
        self.base_lr = self.lr = lr
        self.steps = steps
        self.eps = eps
        self.beta1, self.beta2 = betas
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.step_count = 0
        self.epoch = 0

    def step(self, grad: torch.Tensor) -> None:
        self.step_count += 1
        self.param.mul_(1 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        step = float(self.step_count)  # torch keeps it as float32: exact for any count we reach
        bias_correction1 = 1 - self.beta1 ** step
        bias_correction2 = 1 - self.beta2 ** step
        denom = (self.exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-(self.lr / bias_correction1))
        self._anneal()

    def _anneal(self) -> None:
        """CosineAnnealingLR(T_max=steps, eta_min=0).step(), recursive form."""
        self.epoch += 1
        t_max = self.steps
        if (self.epoch - 1 - t_max) % (2 * t_max) == 0:
            self.lr = self.lr + self.base_lr * (1 - math.cos(math.pi / t_max)) / 2
        else:
            self.lr = ((1 + math.cos(math.pi * self.epoch / t_max))
                       / (1 + math.cos(math.pi * (self.epoch - 1) / t_max)) * self.lr)


_DEGREE = 8  # Chebyshev degree per axis of the gradient model: (8 + 1)^2 = 81 exact evaluations
_BOX_COST = (_DEGREE + 1) ** 2 + 1  # exact evaluations per box: the nodes and one check
_ANALYTIC_MARGIN = 4.0  # box half-width = 1 / (margin * q), q bounds how fast pixels' logits move
_TOLERANCE = 1e-6  # accepted model error, relative to the gradient's size in the box
_ABS_TOLERANCE = 1e-12  # accepted absolute error where the gradient itself is ~0
_MIN_HALF_WIDTH = 0.02  # ~20 optimizer steps at the initial learning rate
_MAX_HALF_WIDTH = 0.5  # the weights stay well inside [-0.5, 1.5]; bigger boxes buy nothing
_MIN_SPEED = 1e-6  # floor of q, so that logits that do not move give a finite box
_BUILD_ATTEMPTS = 2  # a box failing its check is rebuilt once, smaller, then exact steps
_SHRINK = 4  # half-width divisor after a failed check
_CHECK_POINT = np.array([0.37, -0.61])  # where a box is checked (box units): off the node grid


def _chebyshev_nodes(count: int) -> np.ndarray:
    return np.cos(np.pi * (np.arange(count) + 0.5) / count)


def _chebyshev_basis(x: float, count: int) -> np.ndarray:
    values = np.empty(count)
    values[0] = 1.0
    if count > 1:
        values[1] = x
    for m in range(2, count):
        values[m] = 2 * x * values[m - 1] - values[m - 2]
    return values


class _GradientModel:
    """The exact gradient, or a Chebyshev interpolant of it where that is as good.

    The gradient is an analytic function of the two weights: with s_i = L0_i + w . d_i, the
    nearest complex singularity of pixel i's terms (sigmoid/softplus poles at s = +-i pi) lies
    at a distance of at least sqrt(s_i^2 + pi^2) / |d_i| in w. On a square box of half-width
    1 / (4 q), q = max_i |d_i| / sqrt(s_i^2 + pi^2) at the box centre, a degree-8 tensor
    Chebyshev interpolant of the exactly evaluated gradient is accurate to ~1e-8 relative.
    Each box is checked against one more exact evaluation inside it (rejected and shrunk if
    off by more than 1e-6 of the gradient's size there), and a step outside every box is
    exact. Where boxes would cost more than exact steps (logits that move fast with the
    weights), it falls back to exact evaluation for good, so it is never more than ~2x the
    exact cost and usually a small fraction of it.
    """

    def __init__(self, pixel_sets: list[_PixelSet], workspace: _Workspace, steps: int) -> None:
        self.pixel_sets = pixel_sets
        self.workspace = workspace
        self.budget = steps  # exact evaluations we allow ourselves to spend on boxes
        self.evaluations = 0
        self.box: tuple[np.ndarray, float, np.ndarray] | None = None  # centre, half-width, coefficients
        self.exact_only = False
        count = _DEGREE + 1
        self.nodes = _chebyshev_nodes(count)
        self.node_basis = np.stack([_chebyshev_basis(x, count) for x in self.nodes])  # (node, m)

    def exact(self, weights: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        free = torch.tensor(weights, dtype=torch.float32).reshape(2, 1)
        grad = sum(loss_and_grad(pixels, free, self.workspace)[1] for pixels in self.pixel_sets)
        return (grad / len(self.pixel_sets)).double().numpy().reshape(2)

    def __call__(self, free: torch.Tensor) -> torch.Tensor:
        weights = free.double().numpy().reshape(2)
        if not self.exact_only:
            if self.box is None or np.abs(weights - self.box[0]).max() > self.box[1]:
                self._build(weights)
            if self.box is not None and np.abs(weights - self.box[0]).max() <= self.box[1]:
                return torch.tensor(self._interpolate(weights), dtype=torch.float32).reshape(2, 1)
        return torch.tensor(self.exact(weights), dtype=torch.float32).reshape(2, 1)

    def _speed(self, weights: np.ndarray) -> float:
        """max over pixels of |d_i| / sqrt(s_i^2 + pi^2): how fast logits approach a singularity."""
        w0, w1, w2 = 1.0 - weights.sum(), weights[0], weights[1]
        fastest = 0.0
        for pixels in self.pixel_sets:
            for _, maps in pixels.blocks:
                for start in range(0, maps.shape[1], _CHUNK):
                    chunk = maps[:, start:start + _CHUNK]
                    logits = chunk[0] * w0 + chunk[1] * w1 + chunk[2] * w2
                    speed = torch.hypot(chunk[1] - chunk[0], chunk[2] - chunk[0])
                    fastest = max(fastest, float((speed / torch.sqrt(logits * logits + math.pi ** 2)).max()))
        return fastest

    def _build(self, centre: np.ndarray) -> None:
        self.box = None
        if self.evaluations + _BOX_COST > self.budget:
            self.exact_only = True
            return
        half_width = min(1.0 / (_ANALYTIC_MARGIN * max(self._speed(centre), _MIN_SPEED)), _MAX_HALF_WIDTH)
        if half_width < _MIN_HALF_WIDTH:  # a box would last only a few steps: not worth 82 passes
            self.exact_only = True
            return
        for _ in range(_BUILD_ATTEMPTS):
            if self.evaluations + _BOX_COST > self.budget:
                self.exact_only = True
                return
            samples = np.empty((_DEGREE + 1, _DEGREE + 1, 2))
            for j, x in enumerate(self.nodes):
                for k, y in enumerate(self.nodes):
                    samples[j, k] = self.exact(centre + half_width * np.array([x, y]))
            # c_mn = (2/N)^2 sum_jk f(x_j, y_k) T_m(x_j) T_n(y_k), first terms halved.
            count = _DEGREE + 1
            coefficients = np.einsum("jm,kn,jkc->mnc", self.node_basis, self.node_basis, samples) * (2 / count) ** 2
            coefficients[0] /= 2
            coefficients[:, 0] /= 2
            self.box = (centre, half_width, coefficients)
            probe = centre + half_width * _CHECK_POINT
            error = np.abs(self._interpolate(probe) - self.exact(probe)).max()
            scale = np.abs(samples).max()
            if error <= _TOLERANCE * scale + _ABS_TOLERANCE:
                return
            self.box = None
            half_width /= _SHRINK

    def _interpolate(self, weights: np.ndarray) -> np.ndarray:
        centre, half_width, coefficients = self.box
        x, y = (weights - centre) / half_width
        count = _DEGREE + 1
        return np.einsum("m,n,mnc->c", _chebyshev_basis(x, count), _chebyshev_basis(y, count), coefficients)


def fit_mask_weights(
    references: list[tuple[torch.Tensor, torch.Tensor]],
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    eps: float = DEFAULT_EPS,
    exact: bool = False,
) -> torch.Tensor:
    """Fit PerSAM-F's weights on cached decoder outputs.

    references: (logits, target) pairs with logits (3, H, W) full-size multimask logits of the
    reference image decoded from its positive location prior, and target (H, W) its mask.
    With several references the loss is their mean. Returns the (3,) weights
    (1 - w1 - w2, w1, w2). ``exact=True`` evaluates the full-resolution gradient at every
    step instead of using the verified interpolant of :class:`_GradientModel`.
    """
    pixel_sets = [_PixelSet(logits, target) for logits, target in references]
    workspace = _Workspace(min(_CHUNK, max(p.count for p in pixel_sets)))
    model = _GradientModel(pixel_sets, workspace, steps)
    model.exact_only = exact
    free = initial_weights()
    optimizer = _AdamW(free, lr=lr, steps=steps, eps=eps)
    for _ in range(steps):
        optimizer.step(model(free))
    return full_weights(free)[:, 0]
