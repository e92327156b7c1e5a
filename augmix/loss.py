"""AugMix training objective: cross-entropy on the clean view plus a Jensen-Shannon consistency term.

The consistency term follows the reference CIFAR code (google-research/augmix): softmax each view,
M = mean of the three distributions clamped to [1e-7, 1] before the log, JS = mean over the views of
KL(p || M) with batch-mean reduction. Everything is computed in float32 with autocast disabled, because
under float16/bfloat16 the clamp floor 1e-7 and the softmax tails underflow and the loss turns noisy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIXTURE_FLOOR = 1e-7


def _check_logits(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> None:
    for name, logits in (("logits_clean", logits_clean), ("logits_aug1", logits_aug1), ("logits_aug2", logits_aug2)):
        if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{name} must be a floating-point tensor [batch, classes], got {shape}")
    if not (logits_clean.shape == logits_aug1.shape == logits_aug2.shape):
        raise ValueError(
            "logits_clean, logits_aug1, logits_aug2 must have the same shape, got "
            f"{tuple(logits_clean.shape)}, {tuple(logits_aug1.shape)}, {tuple(logits_aug2.shape)}"
        )


def jsd_consistency(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> Tensor:
    """Jensen-Shannon divergence among the three views' predictions (scalar, float32).

    KL(p || M) is evaluated from log-probabilities (kl_div with log_target) rather than from the
    probabilities themselves: at extreme logits a probability underflows to exactly 0 and the
    gradient of p·log p would be 0·inf = NaN, whereas p·(log p − log M) stays finite.
    """
    _check_logits(logits_clean, logits_aug1, logits_aug2)
    with torch.autocast(device_type=logits_clean.device.type, enabled=False):
        log_probs = [F.log_softmax(logits.float(), dim=1) for logits in (logits_clean, logits_aug1, logits_aug2)]
        mixture = (log_probs[0].exp() + log_probs[1].exp() + log_probs[2].exp()) / 3.0
        log_mixture = mixture.clamp(MIXTURE_FLOOR, 1.0).log()
        divergences = [
            F.kl_div(log_mixture, log_p, reduction="batchmean", log_target=True) for log_p in log_probs
        ]
        return (divergences[0] + divergences[1] + divergences[2]) / 3.0


def augmix_loss(
    logits_clean: Tensor,
    logits_aug1: Tensor,
    logits_aug2: Tensor,
    targets: Tensor,
    lam: float = 12.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, ce, jsd) with total = CE(clean, targets) + lam·JSD; the augmented views carry no label loss."""
    _check_logits(logits_clean, logits_aug1, logits_aug2)
    if not isinstance(targets, Tensor) or targets.shape != logits_clean.shape[:1] or targets.is_floating_point():
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be an integer tensor [{logits_clean.shape[0]}], got {shape}")
    lam = float(lam)
    if not lam >= 0.0 or lam == float("inf"):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    with torch.autocast(device_type=logits_clean.device.type, enabled=False):
        ce = F.cross_entropy(logits_clean.float(), targets)
    jsd = jsd_consistency(logits_clean, logits_aug1, logits_aug2)
    return ce + lam * jsd, ce, jsd
