"""Weather corruptions (snow, frost, fog, spatter) against per-image references of make_cifar_c.py.

The references below are written here in numpy/scipy/cv2, one image at a time, following the
reference scripts (ImageMagick's motion blur re-written after its C source). Random corruptions
are compared by distribution (statistics over a batch of real CIFAR-10 images); the deterministic
OpenCV pipeline of liquid spatter is compared exactly on the same random field.
"""
from __future__ import annotations

import functools
import importlib.metadata
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augmix.corruptions import weather

NAMES = ("snow", "frost", "fog", "spatter")
PRESETS = ("cifar", "imagenet")

torch.set_num_threads(min(2, torch.get_num_threads()))


def kernel(name: str):
    return getattr(weather, name)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def clean(cifar_images) -> torch.Tensor:
    """64 real CIFAR-10 test images, uint8 [64,3,32,32]."""
    return cifar_images[0][:64]


@pytest.fixture(scope="module")
def large(cifar_images) -> torch.Tensor:
    """3 real images upscaled to 224x224 (bilinear), uint8 [3,3,224,224]."""
    small = cifar_images[0][64:67].float()
    return F.interpolate(small, size=(224, 224), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)


def hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- per-image references (numpy)

def ref_plasma_fractal(rng: np.random.Generator, mapsize: int, wibbledecay: float) -> np.ndarray:
    maparray = np.zeros((mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0
    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        maparray[half::stepsize, half::stepsize] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        drgrid = maparray[half::stepsize, half::stepsize]
        ulgrid = maparray[0::stepsize, 0::stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0::stepsize, half::stepsize] = ltsum / 4 + wibble * rng.uniform(-wibble, wibble, ltsum.shape)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half::stepsize, 0::stepsize] = ttsum / 4 + wibble * rng.uniform(-wibble, wibble, ttsum.shape)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def ref_fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = weather.FOG["cifar"][severity - 1]
    x = x / 255.0
    peak = x.max()
    x = x + strength * ref_plasma_fractal(rng, 32, decay)[:32, :32][..., None]
    return np.uint8(np.clip(x * peak / (peak + strength), 0, 1) * 255)


def ref_clipped_zoom(img: np.ndarray, zoom: float) -> np.ndarray:
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / zoom))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom, zoom, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


def ref_motion_blur(gray: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick MotionBlurImage on an 8-bit gray image (edge virtual pixels), rounded to 8 bits."""
    width = 2 * int(math.ceil(radius)) + 1
    taps = np.arange(width)
    weights = np.exp(-(taps ** 2) / (2 * sigma ** 2))
    weights /= weights.sum()
    h, w = gray.shape
    reach = width - 1
    padded = np.pad(gray, reach, mode="edge")
    out = np.zeros((h, w))
    for i in range(width):
        dx = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        dy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        out += weights[i] * padded[reach + dy:reach + dy + h, reach + dx:reach + dx + w]
    return np.clip(np.round(out), 0, 255)


def ref_snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    mean, std, zoom, threshold, radius, sigma, keep = weather.SNOW["cifar"][severity - 1]
    x = x.astype(np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=mean, scale=std)
    layer = ref_clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8).astype(np.float64)
    layer = ref_motion_blur(layer, radius, sigma, rng.uniform(-135, -45)) / 255.0
    layer = layer[..., None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = keep * x + (1 - keep) * np.maximum(x, gray * 1.5 + 0.5)
    return np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255), layer


def frost_paths() -> list[str]:
    distribution = importlib.metadata.distribution("imagecorruptions")
    files = {str(f).rsplit("/", 1)[-1]: f for f in distribution.files if "frost/" in str(f)}
    return [str(distribution.locate_file(files[name])) for name in weather.FROST_FILES]


@functools.lru_cache(maxsize=None)
def ref_frost_photo(index: int) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.imread(frost_paths()[index]), (0, 0), fx=0.2, fy=0.2)


def ref_frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    image_weight, frost_weight = weather.FROST["cifar"][severity - 1]
    photo = ref_frost_photo(int(rng.integers(5)))
    top, left = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
    photo = photo[top:top + 32, left:left + 32][..., [2, 1, 0]]
    return np.uint8(np.clip(image_weight * x + frost_weight * photo, 0, 255))


def ref_liquid_strength(layer8: np.ndarray) -> np.ndarray:
    import cv2

    dist = 255 - cv2.Canny(layer8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return layer8 * dist


def ref_spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.filters import gaussian

    mean, std, sigma, threshold, strength, mud = weather.SPATTER["cifar"][severity - 1]
    x = x.astype(np.float32) / 255.0
    layer = gaussian(rng.normal(size=x.shape[:2], loc=mean, scale=std), sigma=sigma)
    layer[layer < threshold] = 0
    if mud == 0:
        layer8 = (layer * 255).astype(np.uint8)  # the reference's cast: values >= 256 wrap
        m = ref_liquid_strength(layer8)
        m = m / m.max() * strength if m.max() > 0 else m
        color = np.array([175, 238, 238]) / 255.0
        return np.uint8(np.clip(x + m[..., None] * color, 0, 1) * 255)
    m = gaussian((layer > threshold).astype(np.float32), sigma=strength)
    m[m < 0.8] = 0
    color = np.array([63, 42, 20]) / 255.0 * m[..., None]
    return np.uint8(np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255)


def reference_batch(name: str, images: torch.Tensor, severity: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    function = {"fog": ref_fog, "frost": ref_frost, "spatter": ref_spatter,
                "snow": lambda x, s, r: ref_snow(x, s, r)[0]}[name]
    return np.stack([function(image, severity, rng) for image in hwc(images)])


def mean_abs_change(corrupted, clean) -> float:
    corrupted = np.asarray(corrupted, dtype=np.float64)
    return float(np.abs(corrupted - np.asarray(clean, dtype=np.float64)).mean())


# ---------------------------------------------------------------- shapes, seeds, errors

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("preset", PRESETS)
def test_shape_dtype_and_range(name, preset, clean, large):
    for images in (clean[:8], large[:2]):
        for severity in (1, 5):
            out = kernel(name)(images, severity, preset, seeded(0))
            assert out.shape == images.shape and out.dtype == torch.uint8
            assert not torch.equal(out, images)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name, clean):
    first = kernel(name)(clean[:16], 3, "cifar", seeded(7))
    again = kernel(name)(clean[:16], 3, "cifar", seeded(7))
    other = kernel(name)(clean[:16], 3, "cifar", seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_non_square_and_odd_sizes(clean):
    images = F.interpolate(clean[:2].float(), size=(40, 56)).to(torch.uint8)
    for name in NAMES:
        for preset in PRESETS:
            assert kernel(name)(images, 4, preset, seeded(1)).shape == images.shape


def test_missing_distribution_says_how_to_install(monkeypatch, clean):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    weather.frost_photographs.cache_clear()
    weather.frost_bank.cache_clear()
    monkeypatch.setattr(weather.importlib.metadata, "distribution", missing)
    try:
        with pytest.raises(RuntimeError, match="pip install imagecorruptions"):
            weather.frost(clean[:2], 1, "cifar", seeded(0))
    finally:
        weather.frost_photographs.cache_clear()
        weather.frost_bank.cache_clear()


# ---------------------------------------------------------------- severity

# Severities whose mean deviation the reference itself does not order: CIFAR spatter switches
# from liquid (1-3) to mud (4-5), and frost trades image weight against frost weight.
NOT_MONOTONE = {"spatter": [(3, 4)], "frost": [(3, 4), (4, 5)]}


@pytest.fixture(scope="module")
def corrupted_cifar(clean):
    """name -> (ours, reference): uint8 HWC arrays for severities 1-5, computed once per module."""
    cache: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def get(name: str):
        if name not in cache:
            ours = [kernel(name)(clean, s, "cifar", seeded(s)).numpy().transpose(0, 2, 3, 1) for s in range(1, 6)]
            ref = [reference_batch(name, clean, s, 100 + s) for s in range(1, 6)]
            cache[name] = (ours, ref)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_severity_monotone(name, clean, corrupted_cifar):
    ours, ref = corrupted_cifar(name)
    changes = [mean_abs_change(out, hwc(clean)) for out in ours]
    reference = [mean_abs_change(out, hwc(clean)) for out in ref]
    for low in range(1, 5):
        if (low, low + 1) in NOT_MONOTONE.get(name, []):
            # Where the reference is not monotone, we follow its ordering.
            assert (changes[low] > changes[low - 1]) == (reference[low] > reference[low - 1]), (changes, reference)
        else:
            assert changes[low] > changes[low - 1], (name, changes)
            assert reference[low] > reference[low - 1], (name, reference)


# ---------------------------------------------------------------- distributions against the reference

@pytest.mark.parametrize("name", NAMES)
def test_mean_change_matches_reference(name, clean, corrupted_cifar):
    """Mean |corrupted - clean| and mean signed shift, torch vs the per-image reference, every severity."""
    for severity, (ours, ref) in enumerate(zip(*corrupted_cifar(name)), start=1):
        ours_change, ref_change = mean_abs_change(ours, hwc(clean)), mean_abs_change(ref, hwc(clean))
        assert ours_change == pytest.approx(ref_change, rel=0.15, abs=0.5), (name, severity)
        shift = ours.astype(np.float64).mean() - ref.astype(np.float64).mean()
        assert abs(shift) < max(0.15 * ref_change, 0.5), (name, severity, shift)


def test_fog_fractal_statistics():
    for preset, mapsize in (("cifar", 32), ("imagenet", 256)):
        rng = np.random.default_rng(0)
        count = 128 if mapsize == 32 else 8
        for strength, decay in weather.FOG[preset][::2]:
            ours = weather.plasma_fractal(count, mapsize, decay, seeded(0), torch.device("cpu")).numpy()
            ref = np.stack([ref_plasma_fractal(rng, mapsize, decay) for _ in range(count)])
            if mapsize == 32:  # one map's mean has sd ~0.09: only a large sample pins it
                assert ours.mean() == pytest.approx(ref.mean(), abs=0.05)
            assert ours.std(axis=(1, 2)).mean() == pytest.approx(ref.std(axis=(1, 2)).mean(), rel=0.2)
            roughness = lambda maps: np.abs(np.diff(maps, axis=-1)).mean()  # noqa: E731
            assert roughness(ours) == pytest.approx(roughness(ref), rel=0.2)


def assert_same_mean(ours: np.ndarray, ref: np.ndarray, label) -> None:
    """Sample means agree within 4 standard errors of their difference (plus a hair)."""
    error = math.sqrt(ours.var() / ours.size + ref.var() / ref.size)
    assert abs(ours.mean() - ref.mean()) < 4 * error + 1e-4, (label, ours.mean(), ref.mean(), error)


def test_snow_layer_coverage_and_brightness():
    """Per-image fraction of snow pixels and mean brightness added, torch vs reference layers."""
    for severity in range(1, 6):
        layer = weather.snow_layer(64, 32, 32, severity, "cifar", seeded(severity), torch.device("cpu")).numpy()[:, 0]
        rng = np.random.default_rng(severity)
        blank = np.zeros((32, 32, 3), np.uint8)  # the layer does not depend on the image
        ref = np.stack([ref_snow(blank, severity, rng)[1][..., 0] for _ in range(64)])
        assert_same_mean((layer > 0).mean(axis=(1, 2)), (ref > 0).mean(axis=(1, 2)), ("coverage", severity))
        assert_same_mean(layer.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), ("brightness", severity))


def test_motion_blur_matches_imagemagick_reference():
    rng = np.random.default_rng(3)
    field = (rng.random((4, 32, 32)) > 0.9) * 255.0
    angles = np.array([-135.0, -100.3, -60.0, -45.0])
    for radius, sigma in ((8, 3), (14, 12)):
        ours = weather.motion_blur_filter(torch.tensor(field, dtype=torch.float32).unsqueeze(1), radius, sigma,
                                          torch.tensor(angles)).squeeze(1).round().numpy()
        ref = np.stack([ref_motion_blur(f, radius, sigma, a) for f, a in zip(field, angles)])
        assert np.abs(ours - ref).max() <= 1


def test_frost_photographs_match_opencv():
    import cv2

    photos = weather.frost_photographs()
    assert len(photos) == 6
    for photo, path in zip(photos, frost_paths()):
        ref = cv2.imread(path)[..., ::-1]
        assert tuple(photo.shape) == (3, *ref.shape[:2])
        assert np.abs(photo.permute(1, 2, 0).numpy().astype(float) - ref).mean() < 1.0
        small = weather.resize_like_cv2_linear(photo, 0.2).permute(1, 2, 0).numpy()
        ref_small = cv2.resize(cv2.imread(path), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        assert small.shape == ref_small.shape
        assert np.abs(small.astype(float) - ref_small).mean() < 1.0


def test_frost_blend_coefficients(clean):
    """out = trunc(a*x + b*crop): recover a and b by least squares from unclipped pixels."""
    for preset in PRESETS:
        for severity in (1, 5):
            layer = weather.frost_layers(16, 32, 32, preset, seeded(severity), torch.device("cpu")).float()
            out = weather.frost(clean[:16], severity, preset, seeded(severity)).float()
            x = clean[:16].float()
            usable = (out < 254).flatten()
            design = torch.stack([x.flatten()[usable], layer.flatten()[usable]], dim=1).double()
            coefficients = torch.linalg.lstsq(design, out.flatten()[usable].double().unsqueeze(1) + 0.5).solution
            expected = torch.tensor(weather.FROST[preset][severity - 1], dtype=torch.float64)
            assert torch.allclose(coefficients.squeeze(1), expected, atol=0.01)


def test_liquid_spatter_pipeline_matches_opencv():
    """Canny, distanceTransform, equalizeHist, filter2D and blurs: same field in, same mask out."""
    pytest.importorskip("cv2")
    for preset, severity, size in (("cifar", 3, 32), ("imagenet", 1, 32), ("imagenet", 2, 96)):
        field = weather.spatter_field(6, size, size, severity, preset, seeded(severity), torch.device("cpu"))
        layer8 = weather.liquid_bytes(field.squeeze(1))
        ours = weather.liquid_strength(layer8).numpy()
        ref = np.stack([ref_liquid_strength(f.numpy().astype(np.uint8)) for f in layer8])
        assert np.abs(ours - ref).max() == 0


def test_liquid_bytes_wrap_like_the_reference_cast():
    """(liquid_layer * 255).astype(np.uint8) truncates and wraps values of 256/255 and more."""
    field = np.array([0.0, 0.7, 254.9 / 255, 1.0, 256.5 / 255, 1.2, 1.358])
    expected = (field * 255).astype(np.uint8)
    assert expected[4] == 0 and expected[5] == 50  # wrapped, not saturated at 255
    ours = weather.liquid_bytes(torch.from_numpy(field))
    assert np.array_equal(ours.numpy().astype(np.uint8), expected)
    # CIFAR severity 3's field does exceed 1 (about one image in six), so the wrap matters there
    field = weather.spatter_field(64, 32, 32, 3, "cifar", seeded(3), torch.device("cpu"))
    assert (field > 256 / 255).any()


def test_spatter_coverage_matches_reference(clean, corrupted_cifar):
    def changed(out: np.ndarray) -> float:
        return float((np.abs(out.astype(int) - hwc(clean).astype(int)).max(axis=-1) > 2).mean())

    for severity, (ours, ref) in enumerate(zip(*corrupted_cifar("spatter")), start=1):
        assert changed(ours) == pytest.approx(changed(ref), abs=0.05, rel=0.2), severity


# ---------------------------------------------------------------- devices

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, clean):
    for preset in PRESETS:
        cpu = kernel(name)(clean[:16], 3, preset, seeded(5))
        gpu = kernel(name)(clean[:16].cuda(), 3, preset, seeded(5)).cpu()
        assert (cpu.float() - gpu.float()).abs().mean() < 0.5
