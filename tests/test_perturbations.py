"""augmix.perturbations: -P sequence shapes, drift, noise levels, determinism and reference fidelity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from augmix.perturbations import (
    PERTURBATIONS,
    RANDOM_PERTURBATIONS,
    TEST_PERTURBATIONS,
    default_frames,
    perturbation_sequence,
)

torch.set_num_threads(1)


def _natural_images(batch: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth random colour images (no flat regions, no hard clipping)."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, size // 4, size // 4, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (40 + 175 * smooth).round().to(torch.uint8)


def _spot_image(size: int = 32, row: int = 14, col: int = 22) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[:, :, row:row + 4, col:col + 4] = 255
    return image


def _centroid(frames: torch.Tensor) -> torch.Tensor:
    """(x, y) centroid of the intensity of frames [T,3,H,W] -> [T,2]."""
    mass = frames.double().sum(1)
    rows = torch.arange(mass.shape[1], dtype=torch.float64).reshape(1, -1, 1)
    cols = torch.arange(mass.shape[2], dtype=torch.float64).reshape(1, 1, -1)
    total = mass.sum((1, 2))
    return torch.stack([(mass * cols).sum((1, 2)) / total, (mass * rows).sum((1, 2)) / total], dim=1)


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
@pytest.mark.parametrize("name", PERTURBATIONS)
def test_shapes_dtype_and_default_lengths(name, preset):
    images = _natural_images(2, 24)
    sequence = perturbation_sequence(images, name, preset=preset, generator=torch.Generator().manual_seed(1))
    assert sequence.dtype == torch.uint8
    assert sequence.shape == (2, default_frames(name, preset), 3, 24, 24)
    assert perturbation_sequence(images, name, frames=5, preset=preset).shape == (2, 5, 3, 24, 24)


def test_reference_lengths():
    assert default_frames("translate", "cifar") == 16 and default_frames("translate", "imagenet") == 41
    assert default_frames("motion_blur", "cifar") == 21 and default_frames("motion_blur", "imagenet") == 31
    assert all(default_frames(name) == 31 for name in ("gaussian_noise", "zoom_blur", "rotate", "tilt", "scale"))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "zoom_blur"])
def test_first_frame_is_clean(name):
    images = _natural_images()
    sequence = perturbation_sequence(images, name, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sequence[:, 0], images)
    assert not torch.equal(sequence[:, 1], images)


@pytest.mark.parametrize("name, middle", [("translate", 7), ("rotate", 15), ("scale", 15), ("brightness", 15)])
def test_middle_frame_of_a_sweep_is_clean(name, middle):
    images = _natural_images()
    frame = perturbation_sequence(images, name)[:, middle]
    assert (frame.double() - images.double()).abs().mean() < 0.5


def test_middle_tilt_frame_only_shrinks_by_the_reference_focal_factor():
    images = _natural_images()
    frame = perturbation_sequence(images, "tilt")[:, 15].double()
    interior = (frame - images.double())[..., 3:-3, 3:-3].abs().mean()
    assert 0 < interior < 4.0  # f / (f + 1) = 0.978 for 32 px: a third of a pixel at the edge


def test_translate_moves_one_pixel_per_frame():
    centroids = _centroid(perturbation_sequence(_spot_image(col=12), "translate")[0])
    steps = centroids[1:, 0] - centroids[:-1, 0]
    assert torch.allclose(steps, torch.ones_like(steps), atol=1e-6)
    assert torch.allclose(centroids[:, 1], centroids[:1, 1])


def test_rotate_turns_clockwise_one_degree_per_frame():
    centroids = _centroid(perturbation_sequence(_spot_image(), "rotate")[0])
    centre = (32 - 1) / 2
    angles = torch.rad2deg(torch.atan2(-(centroids[:, 1] - centre), centroids[:, 0] - centre))
    steps = angles[1:] - angles[:-1]  # torchvision affine's positive angle is clockwise
    assert (steps < 0).all()
    assert (angles[0] - angles[-1]).item() == pytest.approx(30.0, abs=1.5)


def test_scale_grows_the_image_monotonically():
    frames = perturbation_sequence(_spot_image(), "scale")[0]
    centroids = _centroid(frames)
    distance = centroids[:, 0] - (32 - 1) / 2
    assert (distance[1:] > distance[:-1]).all()
    assert (distance[-1] / distance[15]).item() == pytest.approx(1.3, rel=0.05)
    mass = frames.double().sum((1, 2, 3))
    assert (mass[1:] >= mass[:-1]).all() and mass[-1] > 1.5 * mass[0]


def test_brightness_rises_monotonically():
    means = perturbation_sequence(_natural_images(), "brightness").double().mean((0, 2, 3, 4))
    assert (means[1:] > means[:-1]).all()


@pytest.mark.parametrize("name", ["zoom_blur", "tilt"])
def test_drift_from_the_start_grows(name):
    sequence = perturbation_sequence(_natural_images(), name).double()
    start = sequence[:, 15] if name == "tilt" else sequence[:, 0]
    later = sequence[:, 15:] if name == "tilt" else sequence
    distance = (later - start.unsqueeze(1)).abs().mean((0, 2, 3, 4))
    assert (distance[1:] >= distance[:-1] - 1e-9).all() and distance[-1] > distance[1] > 0


def test_motion_blur_at_angle_zero_smears_along_the_row():
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, :, 16, 20] = 255
    last = perturbation_sequence(image, "motion_blur")[0, -1].double()  # angle 0 degrees
    rows, cols = torch.nonzero(last[0], as_tuple=True)
    assert set(rows.tolist()) == {16}
    assert cols.max().item() == 20 and cols.min().item() < 16  # tap i reads x + i: smear to the left
    assert last[0].sum().item() == pytest.approx(255, abs=7)  # weights sum to one (rounding aside)
    first = perturbation_sequence(image, "motion_blur")[0, 0].double()  # angle -180: smear to the right
    assert torch.nonzero(first[0], as_tuple=True)[1].min().item() == 20


@pytest.mark.parametrize("preset, std", [("cifar", 0.02), ("imagenet", 0.03)])
def test_gaussian_noise_level_and_fresh_draws(preset, std):
    images = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    sequence = perturbation_sequence(images, "gaussian_noise", preset=preset,
                                     generator=torch.Generator().manual_seed(3)).double()
    deviation = sequence[:, 1:] - sequence[:, :1]
    assert deviation.std().item() == pytest.approx(std * 255, rel=0.05)
    assert deviation.mean().item() == pytest.approx(-0.5, abs=0.2)  # np.uint8 truncation
    assert not torch.equal(sequence[:, 1], sequence[:, 2])


def test_shot_noise_level_and_difficulty():
    images = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    for difficulty, photons in [(1, 700), (3, 200)]:
        sequence = perturbation_sequence(images, "shot_noise", difficulty=difficulty,
                                         generator=torch.Generator().manual_seed(4)).double()
        expected = math.sqrt((128 / 255) / photons) * 255
        assert (sequence[:, 1:] - sequence[:, :1]).std().item() == pytest.approx(expected, rel=0.06)


@pytest.mark.parametrize("name", RANDOM_PERTURBATIONS)
def test_random_sequences_are_reproducible_by_seed(name):
    images = _natural_images()
    first = perturbation_sequence(images, name, generator=torch.Generator().manual_seed(5))
    again = perturbation_sequence(images, name, generator=torch.Generator().manual_seed(5))
    other = perturbation_sequence(images, name, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_geometric_sequences_are_deterministic():
    images = _natural_images()
    for name in sorted(set(PERTURBATIONS) - set(RANDOM_PERTURBATIONS)):
        assert torch.equal(perturbation_sequence(images, name), perturbation_sequence(images, name))


def test_the_headline_set_is_imagenet_ps_ten_with_snow():
    assert len(TEST_PERTURBATIONS) == 10 and "snow" in TEST_PERTURBATIONS
    assert not {"speckle_noise", "gaussian_blur", "spatter", "shear"} & set(TEST_PERTURBATIONS)


def test_snow_keeps_one_field_and_turns_its_streaks():
    """Every frame whitens the same image and adds the same field's streaks: frames differ only
    where the blur angle moves snow, and all are at least as bright as the whitened image."""
    images = _natural_images(2)
    sequence = perturbation_sequence(images, "snow", generator=torch.Generator().manual_seed(2)).double()
    assert sequence.shape[1] == 31
    steps = (sequence[:, 1:] - sequence[:, :-1]).abs().mean((0, 2, 3, 4))
    assert (steps > 0).sum() >= 20 and (steps < 20).all()  # whole-pixel taps: some angle steps move nothing
    darkest = sequence.amin(dim=1)
    x = images.double() / 255
    gray = (x * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    whitened = torch.floor((0.85 * x + 0.15 * torch.maximum(x, 1.5 * gray + 0.5)).clamp(0, 1) * 255)
    assert (darkest >= whitened - 1).all()


def test_spatter_drips_down():
    """The liquid moves down the rows frame by frame: its centre of mass row grows."""
    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    sequence = perturbation_sequence(images, "spatter", generator=torch.Generator().manual_seed(1)).double()
    mass = sequence.sum(dim=(2, 4))  # [B, T, H]
    rows = torch.arange(32, dtype=torch.float64)
    centre = (mass * rows).sum(-1) / mass.sum(-1).clamp(min=1e-9)
    assert (centre[:, 9] > centre[:, 0] + 2).all()  # later it drips off the bottom edge


def test_speckle_noise_scales_with_the_pixel():
    images = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    images[:, :, :16] = 50
    sequence = perturbation_sequence(images, "speckle_noise", difficulty=3,
                                     generator=torch.Generator().manual_seed(0)).double()
    deviation = sequence[:, 1:] - sequence[:, :1]
    bright, dark = deviation[..., 16:, :].std().item(), deviation[..., :16, :].std().item()
    assert bright == pytest.approx(0.10 * 200, rel=0.08) and dark == pytest.approx(0.10 * 50, rel=0.1)


def test_gaussian_blur_matches_skimage():
    from skimage.filters import gaussian

    images = _natural_images(1, 32)
    x = images[0].permute(1, 2, 0).numpy() / 255.0
    ours = perturbation_sequence(images, "gaussian_blur")[0]
    for frame in (0, 30):
        reference = np.uint8(255 * gaussian(x, sigma=0.3 + 0.015 * frame, channel_axis=-1, truncate=7.0))
        difference = np.abs(ours[frame].permute(1, 2, 0).numpy().astype(int) - reference.astype(int))
        assert difference.max() <= 1 and (difference == 0).mean() >= 0.95  # measured: 96.3%, 100%


def test_shear_matches_torchvision_pil_affine():
    from PIL import Image
    import torchvision.transforms.functional as TF

    images = _natural_images(1, 32)
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    sheared = perturbation_sequence(images, "shear")[0]
    for frame in (0, 9, 30):
        reference = np.asarray(TF.affine(pil, angle=0, translate=[0, 0], scale=1.0, shear=[float(frame - 15), 0.0],
                                         interpolation=TF.InterpolationMode.BILINEAR))
        _assert_interior_agrees(sheared[frame], reference, 6, AFFINE_IDENTICAL)


# --- fidelity to the reference's libraries on the same image and parameter -------------------------

# Measured on _natural_images: the affine warps are at most 1 level off Pillow's (through
# torchvision) everywhere inside the border but equal on only 49-52% of the values, a rounding
# convention apart; the perspective warp equals OpenCV's exactly.
AFFINE_IDENTICAL = 0.45


def _assert_interior_agrees(ours: torch.Tensor, reference: np.ndarray, border: int, identical: float) -> None:
    """Inside `border`: at most 1 gray level apart and at least `identical` of the values equal."""
    ours_hwc = ours.permute(1, 2, 0).numpy().astype(np.int16)[border:-border, border:-border]
    difference = np.abs(ours_hwc - reference.astype(np.int16)[border:-border, border:-border])
    assert difference.max() <= 1 and (difference == 0).mean() >= identical, \
        (int(difference.max()), float((difference == 0).mean()))


def test_rotate_and_scale_match_torchvision_pil_affine():
    from PIL import Image
    import torchvision.transforms.functional as TF

    images = _natural_images(1, 32)
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    bilinear = TF.InterpolationMode.BILINEAR
    rotated = perturbation_sequence(images, "rotate")[0]
    scaled = perturbation_sequence(images, "scale")[0]
    for frame in (0, 9, 30):
        angle, scale = frame - 15, (frame * 2 + 70) / 100
        reference = np.asarray(TF.affine(pil, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0],
                                         interpolation=bilinear))
        _assert_interior_agrees(rotated[frame], reference, 6, AFFINE_IDENTICAL)
        reference = np.asarray(TF.affine(pil, angle=0, translate=[0, 0], scale=scale, shear=[0.0],
                                         interpolation=bilinear))
        _assert_interior_agrees(scaled[frame], reference, 6, AFFINE_IDENTICAL)


def test_tilt_matches_cv2_warp_perspective():
    cv2 = pytest.importorskip("cv2")
    images = _natural_images(1, 32)
    x = np.ascontiguousarray(images[0].permute(1, 2, 0).numpy())
    h, w = x.shape[:2]
    tilted = perturbation_sequence(images, "tilt")[0]
    for frame in (0, 25):
        theta = np.deg2rad(0.75 * (frame - 15))
        f = np.sqrt(w**2 + h**2)
        to_plane = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
        rx = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0],
                       [0, 0, 0, 1]])
        ry = np.array([[np.cos(theta), 0, -np.sin(theta), 0], [0, 1, 0, 0], [np.sin(theta), 0, np.cos(theta), 0],
                       [0, 0, 0, 1]])
        push = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
        project = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
        reference = cv2.warpPerspective(x, project @ push @ rx @ ry @ to_plane, (w, h))
        _assert_interior_agrees(tilted[frame], reference, 4, 1.0)


def test_brightness_matches_skimage_hsv_shift():
    from skimage import color

    images = _natural_images(1, 32)
    images[0, :, :4, :4] = 0  # black pixels take the grey value V'
    x = images[0].permute(1, 2, 0).numpy() / 255.0
    ours = perturbation_sequence(images, "brightness")[0]
    for frame in (0, 10, 30):
        hsv = color.rgb2hsv(x)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + (frame - 15) * 1.5 / 100, 0, 1)
        reference = np.uint8(color.hsv2rgb(hsv) * 255)
        difference = np.abs(ours[frame].permute(1, 2, 0).numpy().astype(int) - reference.astype(int))
        assert difference.max() <= 1 and (difference == 0).mean() >= 0.99  # measured: 99.9%


def test_zoom_blur_running_mean_is_the_reference_float32_accumulation():
    """avg = ToTensor()(z0); avg += ToTensor()(z_i); ToPILImage()(avg / (i + 1)), bit for bit."""
    import torchvision.transforms as trn
    from augmix.perturbations import _running_mean

    frames = torch.randint(0, 256, (2, 31, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = _running_mean(frames)
    for sample in range(2):
        avg = trn.ToTensor()(frames[sample, 0].permute(1, 2, 0).numpy())
        assert torch.equal(ours[sample, 0], frames[sample, 0])
        for i in range(1, 31):
            avg += trn.ToTensor()(frames[sample, i].permute(1, 2, 0).numpy())
            reference = np.asarray(trn.ToPILImage()(avg / (i + 1)))
            assert np.array_equal(ours[sample, i].permute(1, 2, 0).numpy(), reference), i
    # the float32 truncation matters: an exact float64 mean differs in some pixels
    exact = (frames.double().cumsum(1) / torch.arange(1, 32).reshape(1, -1, 1, 1, 1) + 1e-6).floor().to(torch.uint8)
    assert not torch.equal(exact, ours)


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("images, name, kwargs, match", [
    (_natural_images(), "fog", {}, "unknown perturbation 'fog'"),
    (_natural_images(), "rotate", {"frames": 1}, "frames = 1"),
    (_natural_images(), "rotate", {"frames": 2.5}, "frames = 2.5"),
    (_natural_images(), "rotate", {"frames": True}, "frames = True"),
    (_natural_images(), "rotate", {"preset": "tiny"}, "unknown preset 'tiny'"),
    (_natural_images(), "gaussian_noise", {"difficulty": 4}, "difficulty = 4"),
    (_natural_images(), "rotate", {"difficulty": 2}, "difficulty = 2 for 'rotate'"),
    (_natural_images().float(), "rotate", {}, "torch.float32"),
    (_natural_images()[0], "rotate", {}, r"\(3, 32, 32\)"),
    (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "rotate", {}, "non-empty"),
])
def test_bad_input_raises_one_line_value_error(images, name, kwargs, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        perturbation_sequence(images, name, **kwargs)
    assert "\n" not in str(excinfo.value)
