"""augmix.mix: the AugmentAndMix draw (statistically) and its batched execution (against per-image ops)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

import augmix
from augmix import ops
from augmix.mix import (
    AugMix,
    AugMixPlan,
    apply_plan,
    log_standard_gamma,
    sample_augmix_plan,
    sample_mixing_weights,
)

torch.set_num_threads(1)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_images(batch: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images: a low-resolution random field upsampled, so geometric ops matter."""
    coarse = torch.rand(batch, 3, 6, 6, generator=_generator(seed)) * 255
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return fine.round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- the draw


def test_exports_and_default_ops() -> None:
    assert augmix.AugMix is AugMix
    assert AugMix().ops == tuple(ops.AUGMENTATIONS)
    assert len(AugMix().ops) == 9 and len(AugMix(all_ops=True).ops) == 13
    assert set(AugMix(all_ops=True).ops) >= {"color", "contrast", "brightness", "sharpness"}


@pytest.mark.parametrize("all_ops", [False, True])
def test_ops_are_uniform_over_the_list(all_ops: bool) -> None:
    names = tuple(ops.AUGMENTATIONS_ALL if all_ops else ops.AUGMENTATIONS)
    plan = sample_augmix_plan(20000, 3, -1, 3, 1.0, names, _generator(1))
    chosen = plan.op_index[plan.op_index >= 0]
    counts = torch.bincount(chosen, minlength=len(names)).numpy()
    assert len(counts) == len(names)
    assert stats.chisquare(counts).pvalue > 1e-3
    # each position of a chain is drawn independently: the first step alone is uniform too
    first = torch.bincount(plan.op_index[:, :, 0].reshape(-1), minlength=len(names)).numpy()
    assert stats.chisquare(first).pvalue > 1e-3


def test_depths_uniform_one_to_three_and_chains_are_prefixes() -> None:
    plan = sample_augmix_plan(20000, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(2))
    depths = plan.depths
    assert depths.min() == 1 and depths.max() == 3
    counts = torch.bincount(depths.reshape(-1), minlength=4)[1:].numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    active = plan.op_index >= 0
    assert torch.equal(active, torch.arange(3) < depths.unsqueeze(-1))  # no op after a chain's end


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_fixed_depth(depth: int) -> None:
    plan = sample_augmix_plan(500, 4, depth, 3, 1.0, ops.AUGMENTATIONS, _generator(3))
    assert plan.op_index.shape == (500, 4, depth)
    assert (plan.depths == depth).all()


@pytest.mark.parametrize("severity", [1, 3, 10])
def test_levels_uniform_and_signs_balanced(severity: int) -> None:
    plan = sample_augmix_plan(20000, 3, -1, severity, 1.0, ops.AUGMENTATIONS, _generator(4))
    level = plan.level.reshape(-1).double().numpy()
    assert level.min() >= 0.1 and level.max() < severity
    if severity > 1:
        assert stats.kstest(level, stats.uniform(loc=0.1, scale=severity - 0.1).cdf).pvalue > 1e-3
    sign = plan.sign.reshape(-1)
    assert set(sign.unique().tolist()) == {-1.0, 1.0}
    assert abs(sign.mean().item()) < 4 / np.sqrt(sign.numel())


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.5])
def test_gamma_sampler_matches_gamma_distribution(alpha: float) -> None:
    draws = log_standard_gamma(alpha, (20000,), _generator(5)).exp().numpy()
    assert stats.kstest(draws, stats.gamma(alpha).cdf).pvalue > 1e-3
    assert np.isfinite(np.log(draws)).all()


@pytest.mark.parametrize(("alpha", "width"), [(1.0, 3), (0.5, 3), (3.0, 5), (0.1, 2)])
def test_dirichlet_chain_weights_moments(alpha: float, width: int) -> None:
    weights = sample_mixing_weights(alpha, 20000, width, _generator(6))[0].double()
    assert torch.allclose(weights.sum(1), torch.ones(20000, dtype=torch.float64), atol=1e-6)
    assert (weights >= 0).all()
    expected_var = (width - 1) / (width**2 * (width * alpha + 1))
    assert torch.allclose(weights.mean(0), torch.full((width,), 1 / width, dtype=torch.float64), atol=0.01)
    assert torch.allclose(weights.var(0), torch.full((width,), expected_var, dtype=torch.float64), rtol=0.06)
    # the marginal of a Dirichlet component is Beta(alpha, (width - 1)·alpha); at alpha = 0.1 ~10% of the
    # float32 weights round to exactly 1.0, which a KS test against the continuous CDF cannot take
    if alpha >= 0.5:
        assert stats.kstest(weights[:, 0].numpy(), stats.beta(alpha, (width - 1) * alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_beta_skip_weight_moments(alpha: float) -> None:
    skip = sample_mixing_weights(alpha, 20000, 3, _generator(7))[1].double()
    assert ((skip >= 0) & (skip <= 1)).all()
    assert skip.mean().item() == pytest.approx(0.5, abs=0.01)
    assert skip.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)
    assert stats.kstest(skip.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_plan_is_reproducible_and_per_sample() -> None:
    first = sample_augmix_plan(64, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(8))
    again = sample_augmix_plan(64, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(8))
    other = sample_augmix_plan(64, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(9))
    for field in ("op_index", "level", "sign", "chain_weights", "skip_weight"):
        assert torch.equal(getattr(first, field), getattr(again, field))
        assert not torch.equal(getattr(first, field), getattr(other, field))
    # samples get their own draws
    assert first.skip_weight.unique().numel() == 64
    assert first.op_index.reshape(64, -1).unique(dim=0).shape[0] > 50


# ---------------------------------------------------------------- execution


def _per_image_reference(images: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
    """The plan executed the slow, obvious way: one image, one chain, one op at a time."""
    height, width = images.shape[2:]
    outputs = []
    for b in range(images.shape[0]):
        clean = images[b : b + 1].double() / 255
        mixture = torch.zeros_like(clean)
        for chain in range(plan.width):
            image = images[b : b + 1]
            for step in range(plan.op_index.shape[2]):
                op_id = int(plan.op_index[b, chain, step])
                if op_id < 0:
                    continue
                name = plan.ops[op_id]
                if name in ("autocontrast", "equalize"):
                    image = getattr(ops, name)(image)
                else:
                    size = height if name == "translate_y" else width
                    level = plan.level[b, chain, step : step + 1]
                    sign = plan.sign[b, chain, step : step + 1]
                    image = getattr(ops, name)(image, ops.magnitude_for(name, level, sign, size))
            mixture += float(plan.chain_weights[b, chain]) * image.double() / 255
        skip = float(plan.skip_weight[b])
        outputs.append(skip * clean + (1 - skip) * mixture)
    return torch.cat(outputs).float()


@pytest.mark.parametrize(("width", "depth", "all_ops", "seed"), [(3, -1, False, 10), (2, 4, True, 11), (1, 1, False, 12)])
def test_batched_equals_per_image_composition(width: int, depth: int, all_ops: bool, seed: int) -> None:
    images = _random_images(10, 32, seed)
    names = ops.AUGMENTATIONS_ALL if all_ops else ops.AUGMENTATIONS
    plan = sample_augmix_plan(10, width, depth, 3, 1.0, names, _generator(seed))
    batched = apply_plan(images, plan)
    assert batched.dtype == torch.float32 and batched.shape == images.shape
    assert torch.allclose(batched, _per_image_reference(images, plan), atol=2e-6, rtol=0)


def test_batched_equals_per_image_on_cifar_and_non_square(cifar_images) -> None:
    images = cifar_images[0][:16]
    plan = sample_augmix_plan(16, 3, -1, 10, 1.0, ops.AUGMENTATIONS_ALL, _generator(13))
    assert torch.allclose(apply_plan(images, plan), _per_image_reference(images, plan), atol=2e-6, rtol=0)
    wide = _random_images(6, 40, 14)[:, :, :24, :]
    plan = sample_augmix_plan(6, 3, -1, 6, 1.0, ops.AUGMENTATIONS, _generator(14))
    assert torch.allclose(apply_plan(wide, plan), _per_image_reference(wide, plan), atol=2e-6, rtol=0)


def test_single_image_and_empty_batches() -> None:
    """Tiny batches: with one image all chains often end before the last step; an empty batch passes."""
    image = _random_images(1, 32, 24)
    names = ops.AUGMENTATIONS
    for seed in range(12):
        plan = sample_augmix_plan(1, 3, -1, 3, 1.0, names, _generator(seed))
        assert torch.allclose(apply_plan(image, plan), _per_image_reference(image, plan), atol=2e-6, rtol=0)
    clean, aug1, aug2 = AugMix().triple(image[:0], _generator(0))
    assert clean.shape == aug1.shape == aug2.shape == (0, 3, 32, 32) and aug1.dtype == torch.float32


def test_skip_weight_one_returns_clean_and_zero_returns_chains() -> None:
    images = _random_images(8, 32, 15)
    plan = sample_augmix_plan(8, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(15))
    clean_plan = dataclasses.replace(plan, skip_weight=torch.ones(8))
    assert torch.equal(apply_plan(images, clean_plan), images.float() / 255)
    # m = 0 and a one-hot chain weight: exactly that chain's uint8 image, scaled
    one_hot = torch.zeros(8, 3)
    one_hot[:, 1] = 1
    single = dataclasses.replace(plan, skip_weight=torch.zeros(8), chain_weights=one_hot)
    out = apply_plan(images, single) * 255
    assert torch.allclose(out, out.round(), atol=1e-4)
    reference = _per_image_reference(images, single) * 255
    assert torch.equal(out.round(), reference.round())


def test_output_is_convex_combination(cifar_images) -> None:
    images = cifar_images[0][:64]
    clean, aug1, aug2 = AugMix(severity=10).triple(images, _generator(16))
    for view in (clean, aug1, aug2):
        assert view.dtype == torch.float32 and view.shape == images.shape
        assert view.min() >= 0 and view.max() <= 1
    assert torch.equal(clean, images.float() / 255)


def test_seeded_reproducibility_and_views_differ(cifar_images) -> None:
    images = cifar_images[0][:32]
    augment = AugMix()
    first = augment.triple(images, _generator(17))
    again = augment.triple(images, _generator(17))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other = augment.triple(images, _generator(18))
    assert not torch.equal(first[1], other[1])
    _, aug1, aug2 = first
    per_sample_difference = (aug1 - aug2).abs().flatten(1).amax(1)
    assert (per_sample_difference > 0).float().mean() > 0.9
    assert torch.equal(augment(images, _generator(17)), aug1)  # triple's first view is __call__'s


def test_samples_get_different_augmentations() -> None:
    image = _random_images(1, 32, 19)
    batch = image.expand(16, -1, -1, -1).contiguous()
    out = AugMix()(batch, _generator(19))
    distinct = out.flatten(1).unique(dim=0).shape[0]
    assert distinct == 16


def test_global_rng_when_no_generator() -> None:
    images = _random_images(4, 32, 20)
    torch.manual_seed(20)
    first = AugMix()(images)
    torch.manual_seed(20)
    assert torch.equal(AugMix()(images), first)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": 0}, "width"),
        ({"width": 2.5}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": -2}, "depth"),
        ({"severity": 0}, "severity"),
        ({"severity": 11}, "severity"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
    ],
)
def test_invalid_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AugMix(**kwargs)


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(2, 3, 8, 8),  # float
        torch.zeros(3, 8, 8, dtype=torch.uint8),  # no batch axis
        torch.zeros(2, 1, 8, 8, dtype=torch.uint8),  # one channel
        np.zeros((2, 3, 8, 8), dtype=np.uint8),  # not a tensor
    ],
)
def test_invalid_images(images) -> None:
    with pytest.raises(ValueError, match="images"):
        AugMix()(images)
    with pytest.raises(ValueError, match="images"):
        AugMix().triple(images)


def test_plan_batch_must_match_images() -> None:
    plan = sample_augmix_plan(4, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(21))
    with pytest.raises(ValueError, match="batch"):
        apply_plan(_random_images(5), plan)
    with pytest.raises(ValueError, match="not known"):
        apply_plan(_random_images(4), dataclasses.replace(plan, ops=("rotate", "blur")))


def test_non_contiguous_and_offset_inputs() -> None:
    images = _random_images(9, 32, 25)
    plan = sample_augmix_plan(8, 3, -1, 3, 1.0, ops.AUGMENTATIONS, _generator(25))
    expected = apply_plan(images[1:].clone(), plan)
    odd_offset = images.reshape(-1)[1:].clone()[images[0].numel() - 1 :].view(8, 3, 32, 32)  # offset 3071 bytes
    assert odd_offset.storage_offset() % 8 != 0 and torch.equal(odd_offset, images[1:])
    assert torch.equal(apply_plan(odd_offset, plan), expected)
    channels_last = images[1:].contiguous(memory_format=torch.channels_last)
    assert torch.equal(apply_plan(channels_last, plan), expected)


@pytest.mark.gpu
def test_cuda_matches_cpu_for_the_same_plan() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    images = _random_images(32, 32, 22)
    plan = sample_augmix_plan(32, 3, -1, 3, 1.0, ops.AUGMENTATIONS_ALL, _generator(22))
    on_cpu = apply_plan(images, plan)
    on_gpu = apply_plan(images.cuda(), plan.to("cuda"))
    assert on_gpu.device.type == "cuda"
    # ops match PIL within one gray level on both devices; the mixture keeps that bound
    assert (on_gpu.cpu() - on_cpu).abs().max() <= 1 / 255 + 1e-5
    generator = torch.Generator("cuda").manual_seed(23)
    clean, aug1, aug2 = AugMix().triple(images.cuda(), generator)
    assert aug1.device.type == "cuda" and not torch.equal(aug1, aug2)
