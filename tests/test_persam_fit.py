"""PerSAM-F fitting (docs/method.md 4): the hand-written loss gradient and the optimizer loop against
autograd on the paper's formulation (weights (2, 1), dice + focal on the weighted logits)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from persam.fit import _PixelSet, fit_mask_weights, full_weights, initial_weights, loss_and_grad


def paper_loss(logits: torch.Tensor, target: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Loss written as in the paper's code: weighted sum of the flattened maps, dice + focal."""
    weights = torch.cat((1 - free.sum(0).unsqueeze(0), free), dim=0)
    combined = (logits.flatten(1) * weights).sum(0).unsqueeze(0)
    goal = target.float().flatten().unsqueeze(0)
    prob = combined.sigmoid()
    dice = 1 - (2 * (prob * goal).sum(-1) + 1) / (prob.sum(-1) + goal.sum(-1) + 1)
    ce = F.binary_cross_entropy_with_logits(combined, goal, reduction="none")
    p_t = prob * goal + (1 - prob) * (1 - goal)
    focal = ((0.25 * goal + 0.75 * (1 - goal)) * ce * (1 - p_t) ** 2).mean(1)
    return dice.sum() + focal.sum()


def paper_fit(references, steps):
    free = torch.nn.Parameter(torch.ones(2, 1) / 3)
    optimizer = torch.optim.AdamW([free], lr=1e-3, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = sum(paper_loss(logits, target, free) for logits, target in references) / len(references)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return full_weights(free.detach())[:, 0]


def random_case(seed, size=(48, 64), scale=4.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, *size, generator=generator) * scale
    target = torch.zeros(size, dtype=torch.bool)
    target[size[0] // 4: 3 * size[0] // 4, size[1] // 5: 3 * size[1] // 5] = True
    return logits, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradient_match_autograd(seed):
    logits, target = random_case(seed, scale=[0.5, 4.0, 30.0][seed])  # incl. saturated logits
    free = torch.tensor([[0.2], [0.45]])
    loss, grad = loss_and_grad(_PixelSet(logits, target), free)
    leaf = free.clone().requires_grad_(True)
    expected = paper_loss(logits, target, leaf)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-7)


def test_fit_equals_paper_loop_within_1e6():
    logits, target = random_case(3)
    ours = fit_mask_weights([(logits, target)], steps=300)
    theirs = paper_fit([(logits, target)], steps=300)
    assert float((ours - theirs).abs().max()) < 1e-6
    assert float((ours - full_weights(initial_weights())[:, 0]).abs().max()) > 1e-3  # it moved


def test_few_shot_fit_is_the_mean_loss():
    references = [random_case(4), random_case(5, size=(40, 40))]
    ours = fit_mask_weights(references, steps=100)
    theirs = paper_fit(references, steps=100)
    assert float((ours - theirs).abs().max()) < 1e-6


def test_weights_sum_to_one():
    weights = fit_mask_weights([random_case(6)], steps=10)
    assert weights.shape == (3,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)


def test_chunking_does_not_change_the_result(monkeypatch):
    import persam.fit as fit

    logits, target = random_case(7, size=(64, 96))
    whole = fit_mask_weights([(logits, target)], steps=50)
    monkeypatch.setattr(fit, "_CHUNK", 1000)  # many partial chunks
    chunked = fit_mask_weights([(logits, target)], steps=50)
    assert float((whole - chunked).abs().max()) < 1e-6


def smooth_case(seed, size, scale):
    """Logits shaped like SAM's: low-resolution maps upsampled to full size."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(1, 3, max(size[0] // 8, 2), max(size[1] // 8, 2), generator=generator) * scale
    logits = F.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]
    target = torch.zeros(size, dtype=torch.bool)
    target[size[0] // 4: 3 * size[0] // 4, size[1] // 5: 3 * size[1] // 5] = True
    return logits, target


@pytest.mark.parametrize("scale", [0.3, 4.0, 30.0])
def test_fit_equals_paper_loop_on_sam_like_logits(scale):
    """Smooth logits from barely decided to saturated, as SAM's range from a random to a
    trained checkpoint."""
    references = [smooth_case(int(scale * 10), (80, 100), scale)]
    ours = fit_mask_weights(references, steps=200)
    theirs = paper_fit(references, steps=200)
    assert float((ours - theirs).abs().max()) < 1e-6
