"""augmix.ops against Pillow, the definition of correct (reference/ops.py), on real CIFAR-10 test
images when AUGMIX_SHARED_DATA has them, else on synthetic natural-image-like ones.

Each op is compared image by image with the PIL call the AugMix reference makes, at magnitudes
drawn the way the reference draws them (level ~ U(0.1, severity) for severities 1..10, both
signs) plus the extremes of the range.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from augmix import ops
from reference.images import upsample_bicubic
from reference.ops import pil_reference, reference_magnitude

EXACT_OPS = ("autocontrast", "equalize", "posterize", "solarize")
TOLERANT_OPS = tuple(name for name in ops.AUGMENTATIONS_ALL if name not in EXACT_OPS)
INTEGER_PARAMETER_OPS = ("posterize", "solarize", "rotate", "translate_x", "translate_y")


def sampled_levels(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels as the sampler draws them at severities 1..10 in turn, the range ends included, and signs."""
    rng = np.random.default_rng(seed)
    severities = np.arange(count) % 10 + 1
    levels = rng.uniform(0.1, severities)
    levels[:4] = [0.1, 9.999999, 5.0, 1.0 / 3.0 * 10]
    signs = np.where(np.arange(count) % 2 == 0, 1, -1)
    return torch.from_numpy(levels), torch.from_numpy(signs)


def assert_matches_pil(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> None:
    ours = ops.apply_op(name, images, magnitude)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    arrays = images.permute(0, 2, 3, 1).numpy()
    parameters = [int(m) if name in INTEGER_PARAMETER_OPS else float(m) for m in magnitude.tolist()]
    reference = np.stack([pil_reference(name, a, p) for a, p in zip(arrays, parameters)])
    difference = np.abs(ours.permute(0, 2, 3, 1).numpy().astype(np.int16) - reference.astype(np.int16))
    if name in EXACT_OPS:
        assert difference.max() == 0, f"{name}: {np.count_nonzero(difference)} pixels differ from PIL"
    else:
        assert difference.max() <= 1, f"{name}: a pixel differs from PIL by {difference.max()}"
        identical = float((difference == 0).mean())
        assert identical >= 0.99, f"{name}: only {identical:.4%} of pixels equal PIL's"


@pytest.fixture(scope="module")
def cifar_batch(test_images) -> torch.Tensor:
    return test_images[:96]


@pytest.fixture(scope="module")
def large_batch(test_images) -> torch.Tensor:
    """Four test images upsampled to 224x224 by PIL (bicubic), as ImageNet-sized inputs."""
    return upsample_bicubic(test_images[100:104], 224)


@pytest.mark.parametrize("name", ops.AUGMENTATIONS_ALL)
def test_op_matches_pil_at_sampled_magnitudes(name: str, cifar_batch: torch.Tensor) -> None:
    levels, signs = sampled_levels(cifar_batch.shape[0], seed=ops.AUGMENTATIONS_ALL.index(name))
    magnitude = ops.magnitude_for(name, levels, signs, size=32)
    assert_matches_pil(name, cifar_batch, magnitude)


@pytest.mark.parametrize("name", ops.AUGMENTATIONS_ALL)
def test_op_matches_pil_at_224(name: str, large_batch: torch.Tensor) -> None:
    levels = torch.tensor([0.1, 3.7, 7.3, 9.99], dtype=torch.float64)
    signs = torch.tensor([1, -1, 1, -1])
    magnitude = ops.magnitude_for(name, levels, signs, size=224)
    assert_matches_pil(name, large_batch, magnitude)


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("posterize", list(range(1, 9))),
        ("solarize", [0, 1, 2, 64, 128, 200, 254, 255, 256]),
        ("rotate", [-180, -135, -90, -45, -1, 0, 1, 45, 90, 135, 180, 270, 12.5, -33.3]),
        ("shear_x", [-0.9, -0.3, -0.0015, 0.0, 0.0015, 0.3, 0.9]),
        ("shear_y", [-0.9, -0.3, -0.0015, 0.0, 0.0015, 0.3, 0.9]),
        ("translate_x", [-33, -32, -31, -10, -1, 0, 1, 10, 31, 32, 2.5, -7.25]),
        ("translate_y", [-33, -32, -31, -10, -1, 0, 1, 10, 31, 32, 2.5, -7.25]),
        ("color", [0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 3.0]),
        ("contrast", [0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 3.0]),
        ("brightness", [0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 3.0]),
        ("sharpness", [0.0, 0.1, 0.5, 1.0, 1.5, 1.9, 3.0]),
    ],
)
def test_op_matches_pil_across_parameter_range(name: str, values: list[float], test_images) -> None:
    """Beyond the sampler's range: every parameter value on the same images, non-integers included."""
    images = test_images[200:200 + len(values)]
    magnitude = torch.tensor(values, dtype=torch.float64)
    if name in INTEGER_PARAMETER_OPS and any(v != int(v) for v in values):
        ours = ops.apply_op(name, images, magnitude)
        arrays = images.permute(0, 2, 3, 1).numpy()
        size = arrays.shape[1:3][::-1]
        for array, value, out in zip(arrays, values, ours.permute(0, 2, 3, 1).numpy()):
            coeffs = (1, 0, value, 0, 1, 0) if name == "translate_x" else (1, 0, 0, 0, 1, value)
            if name == "rotate":
                reference = np.asarray(Image.fromarray(array).rotate(value, resample=Image.BILINEAR))
            else:
                reference = np.asarray(Image.fromarray(array).transform(size, Image.AFFINE, coeffs, resample=Image.BILINEAR))
            difference = np.abs(out.astype(np.int16) - reference.astype(np.int16))
            assert difference.max() <= 1 and (difference == 0).mean() >= 0.99, f"{name}({value})"
        return
    assert_matches_pil(name, images, magnitude)


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y", "sharpness", "equalize"])
def test_op_matches_pil_on_non_square_images(name: str, test_images) -> None:
    images = test_images[300:306, :, 3:23, :]  # 20 rows x 32 columns
    magnitude = torch.tensor([-30.0, -7.0, 4.0, 9.0, 17.0, 90.0]) if name == "rotate" else torch.tensor([-0.3, -0.1, 0.05, 0.2, 1.3, 0.9])
    if name.startswith("translate"):
        magnitude = torch.tensor([-10.0, -3.0, 0.0, 1.0, 5.0, 19.0])
    assert_matches_pil(name, images.contiguous(), magnitude.double())


def test_posterize_zero_bits_gives_black(test_images) -> None:
    """The reference formula can give 0 bits; Pillow < 10 mapped it through `i & ~255`, i.e. to 0."""
    images = test_images[:4]
    out = ops.posterize(images, torch.tensor([0, 8, 0, 8]))
    assert int(out[0].max()) == 0 and int(out[2].max()) == 0
    assert torch.equal(out[1], images[1]) and torch.equal(out[3], images[3])


def test_equalize_and_autocontrast_leave_flat_images_alone() -> None:
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(ops.equalize(flat), flat)
    assert torch.equal(ops.autocontrast(flat), flat)


def test_magnitude_for_follows_reference_formulas() -> None:
    rng = np.random.default_rng(7)
    levels = np.concatenate([rng.uniform(0.1, 10.0, 2000), [0.1, 9.999999, 10.0, 2.5, 7.5, 10 / 3]])
    signs = np.where(rng.uniform(size=levels.size) > 0.5, -1, 1)
    for size in (32, 224, 64):
        for name in ops.AUGMENTATIONS_ALL:
            ours = ops.magnitude_for(name, torch.from_numpy(levels), torch.from_numpy(signs), size)
            expected = [reference_magnitude(name, l, s, size) for l, s in zip(levels.tolist(), signs.tolist())]
            assert ours.tolist() == expected, name


def test_magnitude_ranges_at_the_extremes() -> None:
    top = torch.tensor([9.999999], dtype=torch.float64)
    plus = torch.tensor([1])
    assert ops.magnitude_for("posterize", top, plus, 32).item() == 1
    assert ops.magnitude_for("solarize", top, plus, 32).item() == 1
    assert ops.magnitude_for("rotate", top, torch.tensor([-1]), 32).item() == -29
    assert ops.magnitude_for("translate_x", top, plus, 32).item() == 10
    assert ops.magnitude_for("translate_y", top, plus, 224).item() == 74
    assert math.isclose(ops.magnitude_for("sharpness", top, plus, 32).item(), 1.9, abs_tol=1e-6)


def test_op_lists_match_the_reference() -> None:
    assert ops.AUGMENTATIONS == ("autocontrast", "equalize", "posterize", "rotate", "solarize",
                                 "shear_x", "shear_y", "translate_x", "translate_y")
    assert ops.AUGMENTATIONS_ALL == ops.AUGMENTATIONS + ("color", "contrast", "brightness", "sharpness")
    assert set(ops.OPS) == set(ops.AUGMENTATIONS_ALL)


def test_scalar_magnitude_broadcasts(test_images) -> None:
    images = test_images[:3]
    assert torch.equal(ops.rotate(images, 15.0), ops.rotate(images, torch.full((3,), 15.0)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ops.autocontrast(torch.zeros(2, 3, 8, 8, dtype=torch.float32)), "torch.float32"),
        (lambda: ops.equalize(torch.zeros(3, 8, 8, dtype=torch.uint8)), r"\(3, 8, 8\)"),
        (lambda: ops.solarize(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), torch.ones(2)), r"\(2, 4, 8, 8\)"),
        (lambda: ops.rotate(np.zeros((2, 3, 8, 8), np.uint8), torch.ones(2)), "ndarray"),
        (lambda: ops.rotate(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.ones(3)), r"\(3,\)"),
        (lambda: ops.shear_x(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.ones(2, 1)), r"\(2, 1\)"),
        (lambda: ops.posterize(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([3, 9])), r"\[9\.0\]"),
        (lambda: ops.posterize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.tensor([2.5])), r"2\.5"),
        (lambda: ops.color(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.tensor([math.nan])), "nan"),
        (lambda: ops.contrast(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "high"), "str"),
        (lambda: ops.apply_op("invert", torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), "invert"),
        (lambda: ops.magnitude_for("blur", torch.ones(1), None, 32), "blur"),
        (lambda: ops.magnitude_for("rotate", torch.ones(1), None, 0), "size 0"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ops.AUGMENTATIONS_ALL)
def test_cuda_matches_cpu(name: str, test_images) -> None:
    images = test_images[:64]
    levels, signs = sampled_levels(64, seed=11)
    magnitude = ops.magnitude_for(name, levels, signs, size=32)
    on_cpu = ops.apply_op(name, images, magnitude)
    on_cuda = ops.apply_op(name, images.cuda(), magnitude.cuda())
    assert on_cuda.is_cuda
    assert torch.equal(on_cuda.cpu(), on_cpu)
