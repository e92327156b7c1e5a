"""augmix.loss: the CE + lambda·JSD objective against the formula, its symmetries and numerical robustness."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augmix.loss import augmix_loss, jsd_consistency


def _logits(seed: int, batch: int = 16, classes: int = 10, scale: float = 3.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(batch, classes, generator=generator) for _ in range(3)]


def _jsd_by_formula(logits: list[torch.Tensor]) -> float:
    """JS = 1/3 Σ_v mean_batch Σ_c p_v log(p_v / clamp(M)), in float64 numpy."""
    probs = []
    for view in logits:
        z = view.double().numpy()
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    mixture = np.clip(sum(probs) / 3.0, 1e-7, 1.0)
    total = 0.0
    for p in probs:
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(mixture)), 0.0)
        total += terms.sum(axis=1).mean()
    return total / 3.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jsd_matches_direct_formula(seed: int) -> None:
    logits = _logits(seed)
    assert jsd_consistency(*logits).item() == pytest.approx(_jsd_by_formula(logits), rel=1e-5, abs=1e-7)


def test_jsd_matches_reference_kl_div_form() -> None:
    """Same number as the reference code's F.kl_div(log M, p, 'batchmean') on moderate logits."""
    logits = _logits(3)
    probs = [F.softmax(z, dim=1) for z in logits]
    log_mixture = torch.clamp(sum(probs) / 3.0, 1e-7, 1).log()
    reference = sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / 3.0
    assert jsd_consistency(*logits).item() == pytest.approx(reference.item(), rel=1e-5)


def test_jsd_is_symmetric_under_permutation() -> None:
    logits = _logits(4)
    values = [jsd_consistency(*order).item() for order in itertools.permutations(logits)]
    assert max(values) - min(values) < 1e-6
    assert values[0] > 1e-3


def test_jsd_is_zero_when_predictions_agree() -> None:
    logits = _logits(5)[0]
    assert abs(jsd_consistency(logits, logits.clone(), logits.clone()).item()) < 1e-7
    shifted = logits + 7.0  # softmax is shift-invariant per row
    assert abs(jsd_consistency(logits, shifted, logits - 2.0).item()) < 1e-6


def test_jsd_is_bounded_by_log3_and_positive() -> None:
    """One-hot predictions on disjoint classes give KL(p‖M) = log 3 each: the maximum of this JS."""
    logits = torch.full((3, 4, 3), -1e4)
    for view in range(3):
        logits[view, :, view] = 1e4
    value = jsd_consistency(*logits).item()
    assert 0 < value <= np.log(3) + 1e-5
    assert value == pytest.approx(np.log(3), rel=1e-5)


def test_augmix_loss_parts_and_lambda_scaling() -> None:
    logits = _logits(6)
    targets = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(6))
    total, ce, jsd = augmix_loss(*logits, targets)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[0], targets).item(), rel=1e-6)
    assert jsd.item() == pytest.approx(jsd_consistency(*logits).item(), rel=1e-6)
    assert total.item() == pytest.approx(ce.item() + 12.0 * jsd.item(), rel=1e-6)
    total_zero, _, _ = augmix_loss(*logits, targets, lam=0.0)
    assert total_zero.item() == pytest.approx(ce.item(), rel=1e-6)
    total_double, _, _ = augmix_loss(*logits, targets, lam=24.0)
    assert total_double.item() - ce.item() == pytest.approx(2 * (total.item() - ce.item()), rel=1e-5)


def test_ce_ignores_augmented_views() -> None:
    logits = _logits(7)
    targets = torch.zeros(16, dtype=torch.long)
    _, ce_a, _ = augmix_loss(*logits, targets)
    _, ce_b, _ = augmix_loss(logits[0], -logits[1], 5 * logits[2], targets)
    assert ce_a.item() == ce_b.item()


def test_gradients_finite_at_extreme_logits() -> None:
    logits = [z.sign() * 1e4 for z in _logits(8)]
    leaves = [z.clone().requires_grad_(True) for z in logits]
    targets = torch.arange(16) % 10
    total, _, jsd = augmix_loss(*leaves, targets)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(jsd)
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()
    assert any(leaf.grad.abs().sum() > 0 for leaf in leaves)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_and_finite_under_autocast(dtype: torch.dtype) -> None:
    layer = torch.nn.Linear(8, 10)
    generator = torch.Generator().manual_seed(9)
    inputs = [torch.randn(16, 8, generator=generator) * 100 for _ in range(3)]
    targets = torch.arange(16) % 10
    try:
        with torch.autocast("cpu", dtype=dtype):
            logits = [layer(x) for x in inputs]
            total, ce, jsd = augmix_loss(*logits, targets)
    except RuntimeError as error:  # pragma: no cover - depends on the CPU build
        pytest.skip(f"CPU autocast {dtype} unsupported: {error}")
    assert logits[0].dtype == dtype
    assert total.dtype == ce.dtype == jsd.dtype == torch.float32
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    expected = jsd_consistency(*[z.float() for z in logits]).item()
    assert jsd.item() == pytest.approx(expected, rel=1e-6)


def test_rejects_bad_inputs() -> None:
    logits = _logits(10)
    with pytest.raises(ValueError, match="same shape"):
        jsd_consistency(logits[0], logits[1][:3], logits[2])
    with pytest.raises(ValueError, match="logits_aug2"):
        jsd_consistency(logits[0], logits[1], logits[2][0])
    with pytest.raises(ValueError, match="targets"):
        augmix_loss(*logits, torch.zeros(16))
    with pytest.raises(ValueError, match="lam"):
        augmix_loss(*logits, torch.zeros(16, dtype=torch.long), lam=-1.0)
