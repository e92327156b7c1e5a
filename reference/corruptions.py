"""The 19 corruptions of CIFAR-10-C / ImageNet-C as published, one image at a time.

Each `ref_*` function follows Hendrycks & Dietterich's make_cifar_c.py ("cifar") and
make_imagenet_c.py ("imagenet") with the libraries they call (NumPy, SciPy, scikit-image, OpenCV,
PIL); ImageMagick's motion blur, which the scripts reach through Wand, is written after its C
source (effect.c, MotionBlurImage). Images are HxWx3 uint8 arrays; the functions return the float
image in 0..255 before the scripts' final np.uint8 cast, and draw every random number from the
NumPy Generator they are given, in the scripts' order.

CONSTANTS holds the scripts' `c` tables, name -> preset -> five severities, written out as there;
the module-level settings below it are the other numbers the scripts hard-code.
"""
from __future__ import annotations

import functools
import importlib.metadata
import io
import math
from typing import Callable

import numpy as np

PRESETS = ("cifar", "imagenet")

# ---------------------------------------------------------------- the scripts' constants

CONSTANTS = {
    "gaussian_noise": {"cifar": [0.04, 0.06, .08, .09, .10], "imagenet": [.08, .12, 0.18, 0.26, 0.38]},
    "shot_noise": {"cifar": [500, 250, 100, 75, 50], "imagenet": [60, 25, 12, 5, 3]},
    "impulse_noise": {"cifar": [.01, .02, .03, .05, .07], "imagenet": [.03, .06, .09, 0.17, 0.27]},
    "speckle_noise": {"cifar": [.06, .1, .12, .16, .2], "imagenet": [.15, .2, 0.35, 0.45, 0.6]},
    "gaussian_blur": {"cifar": [.4, .6, 0.7, .8, 1], "imagenet": [1, 2, 3, 4, 6]},
    "glass_blur": {"cifar": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
                   "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]},
    "defocus_blur": {"cifar": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
                     "imagenet": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]},
    "motion_blur": {"cifar": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
                    "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]},
    "zoom_blur": {"cifar": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                            np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
                  "imagenet": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                               np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]},
    "snow": {"cifar": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                       (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                       (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
             "imagenet": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                          (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                          (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]},
    "frost": {"cifar": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
              "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]},
    "fog": {"cifar": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
            "imagenet": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]},
    "spatter": {"cifar": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                          (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                          (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
                "imagenet": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                             (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                             (0.67, 0.4, 1, 0.65, 1.5, 1)]},
    "contrast": {"cifar": [.75, .5, .4, .3, 0.15], "imagenet": [0.4, .3, .2, .1, .05]},
    "brightness": {"cifar": [.05, .1, .15, .2, .3], "imagenet": [.1, .2, .3, .4, .5]},
    "saturate": {"cifar": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
                 "imagenet": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]},
    "jpeg_compression": {"cifar": [80, 65, 58, 50, 40], "imagenet": [25, 18, 15, 10, 7]},
    "pixelate": {"cifar": [0.95, 0.9, 0.85, 0.75, 0.65], "imagenet": [0.6, 0.5, 0.4, 0.3, 0.25]},
    "elastic_transform": {
        "cifar": [(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07), (32 * 0.08, 32 * 0.06, 32 * 0.06),
                  (32 * 0.1, 32 * 0.04, 32 * 0.05), (32 * 0.1, 32 * 0.03, 32 * 0.03)],
        "imagenet": [(244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                     (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                     (244 * 0.12, 244 * 0.01, 244 * 0.02)]},
}

MOTION_BLUR_ANGLES = (-45, 45)  # np.random.uniform(-45, 45)
SNOW_ANGLES = (-135, -45)  # np.random.uniform(-135, -45)
FOG_MAPSIZE = {"cifar": 32, "imagenet": 256}  # plasma_fractal(mapsize=...) default of each script
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_CHOICES = 5  # np.random.randint(5): the sixth photograph is never chosen
FROST_SCALE = {"cifar": 0.2, "imagenet": 1.0}  # make_cifar_c.py resizes by fx=fy=0.2; ImageNet does not
WATER_RGB = (175, 238, 238)  # channels 0, 1, 2 of the liquid colour (of an RGB image)
MUD_RGB = (63, 42, 20)


# ---------------------------------------------------------------- shared pieces

def skimage_gaussian(x: np.ndarray, sigma: float, **kwargs) -> np.ndarray:
    """skimage.filters.gaussian as the scripts call it (`multichannel=True` is `channel_axis=-1` now)."""
    from skimage.filters import gaussian
    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None, **kwargs)


def ref_clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    from scipy.ndimage import zoom as scizoom
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


def ref_motion_blur_at(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick MotionBlurImage (effect.c): one-sided gaussian taps along the angle, edge pixels.

    Works on HxW or HxWxC float arrays in 0..255 and rounds like the 8-bit PNG Wand hands back.
    """
    width = 2 * int(math.ceil(radius)) + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    height, img_width = img.shape[:2]
    out = np.zeros(img.shape, dtype=np.float64)
    rows, cols = np.arange(height)[:, None], np.arange(img_width)[None, :]
    for i in range(width):
        off_x = math.ceil(i * py / math.hypot(px, py) - 0.5)
        off_y = math.ceil(i * px / math.hypot(px, py) - 0.5)
        out += kernel[i] * img[np.clip(rows + off_y, 0, height - 1), np.clip(cols + off_x, 0, img_width - 1)]
    return np.clip(np.round(out), 0, 255)


# ---------------------------------------------------------------- noise

def ref_gaussian_noise(img, c, rng):
    x = img / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def ref_shot_noise(img, c, rng):
    x = img / 255.
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def ref_impulse_noise(img, c, rng):
    from skimage.util import random_noise
    return np.clip(random_noise(img / 255., mode="s&p", amount=c, rng=rng), 0, 1) * 255


def ref_speckle_noise(img, c, rng):
    x = img / 255.
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


# ---------------------------------------------------------------- blur

def ref_gaussian_blur(img, c, rng=None):
    return np.clip(skimage_gaussian(img / 255., c), 0, 1) * 255


def ref_local_shuffle(x, c, randint):
    """The scripts' shuffle loop, its statements verbatim, on a NumPy uint8 [H,W,3] (in place).

    Both right-hand items of the "swap" are views, so it copies (h', w') into (h, w) and leaves
    (h', w') as it was; every released glass-blur image was made that way.
    """
    height, width = x.shape[:2]
    for i in range(c[2]):
        for h in range(height - c[1], c[1], -1):
            for w in range(width - c[1], c[1], -1):
                dx, dy = randint(-c[1], c[1], size=(2,))
                h_prime, w_prime = h + dy, w + dx
                # swap
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


def ref_glass_blur(img, c, rng):
    x = np.uint8(skimage_gaussian(img / 255., c[0]) * 255)
    x = ref_local_shuffle(x, c, rng.integers)
    return np.clip(skimage_gaussian(x / 255., c[0]), 0, 1) * 255


def ref_disk(radius, alias_blur=0.1, dtype=np.float32):
    import cv2
    if radius <= 8:
        L, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        L, ksize = np.arange(-radius, radius + 1), (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


def ref_defocus_blur(img, c, rng=None):
    import cv2
    x = img / 255.
    kernel = ref_disk(radius=c[0], alias_blur=c[1])
    channels = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(channels, 0, 1) * 255


def ref_motion_blur(img, c, rng):
    return ref_motion_blur_at(img, c[0], c[1], rng.uniform(*MOTION_BLUR_ANGLES))


def ref_zoom_blur(img, c, rng=None):
    x = (img / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += ref_clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


# ---------------------------------------------------------------- weather

def ref_plasma_fractal(rng, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the scripts' plasma_fractal)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0
    while stepsize >= 2:
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        half = stepsize // 2
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def ref_fog(img, c, rng, mapsize: int):
    x = img / 255.
    max_val = x.max()
    size = img.shape[0]
    x = x + c[0] * ref_plasma_fractal(rng, mapsize, c[1])[:size, :size][..., None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def frost_paths() -> list[str]:
    """The six frost photographs as imagecorruptions ships them, in the scripts' order."""
    distribution = importlib.metadata.distribution("imagecorruptions")
    files = {str(f).rsplit("/", 1)[-1]: f for f in distribution.files if "frost/" in str(f)}
    return [str(distribution.locate_file(files[name])) for name in FROST_FILES]


@functools.lru_cache(maxsize=None)
def ref_frost_photo(index: int, scale: float) -> np.ndarray:
    """cv2.imread of photograph `index` (BGR), resized by `scale` as the CIFAR script does."""
    import cv2
    photo = cv2.imread(frost_paths()[index])
    return cv2.resize(photo, (0, 0), fx=scale, fy=scale) if scale != 1 else photo


def ref_frost(img, c, rng, scale: float):
    frost = ref_frost_photo(int(rng.integers(FROST_CHOICES)), scale)
    size = img.shape[0]
    x0, y0 = rng.integers(0, frost.shape[0] - size), rng.integers(0, frost.shape[1] - size)
    frost = frost[x0:x0 + size, y0:y0 + size][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(img) + c[1] * frost, 0, 255)


def ref_snow_layer(shape: tuple[int, int], c, rng) -> np.ndarray:
    """The snow layer [H,W,1] in 0..1 after ImageMagick's motion blur (it does not see the image)."""
    layer = rng.normal(size=shape, loc=c[0], scale=c[1])
    layer = ref_clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.uint8(np.clip(layer.squeeze(), 0, 1) * 255)
    layer = ref_motion_blur_at(layer.astype(np.float64), c[4], c[5], rng.uniform(*SNOW_ANGLES)) / 255.
    return layer[..., None]


def ref_snow(img, c, rng):
    import cv2
    x = np.array(img, dtype=np.float32) / 255.
    layer = ref_snow_layer(x.shape[:2], c, rng)
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def ref_liquid_strength(liquid: np.ndarray) -> np.ndarray:
    """The liquid branch's OpenCV pipeline on the uint8 layer: layer * smoothed edge distance."""
    import cv2
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return liquid * dist


def ref_spatter(img, c, rng):
    """The scripts' spatter; where no liquid survives the threshold they divide 0 by 0 (a NaN
    image), which is taken here as no liquid: the image unchanged."""
    import cv2
    x = np.array(img, dtype=np.float32) / 255.
    liquid = skimage_gaussian(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)  # values of 256/255 and more wrap, as there
        m = cv2.cvtColor(ref_liquid_strength(liquid), cv2.COLOR_GRAY2BGRA)
        peak = np.max(m, axis=(0, 1))
        m = np.divide(m, peak, out=np.zeros_like(m), where=peak > 0)
        m *= c[4]
        color = np.concatenate([v / 255. * np.ones_like(m[..., :1]) for v in WATER_RGB], axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = skimage_gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), c[4])
    m[m < 0.8] = 0
    color = np.concatenate([v / 255. * np.ones_like(x[..., :1]) for v in MUD_RGB], axis=2) * m[..., None]
    return np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255


# ---------------------------------------------------------------- digital

def ref_contrast(img, c, rng=None):
    x = img / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def ref_brightness(img, c, rng=None):
    import skimage.color
    x = skimage.color.rgb2hsv(img / 255.)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255


def ref_saturate(img, c, rng=None):
    import skimage.color
    x = skimage.color.rgb2hsv(img / 255.)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255


def ref_elastic_transform(img, c, rng):
    import cv2
    from scipy.ndimage import map_coordinates
    image = np.array(img, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (skimage_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (skimage_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (np.reshape(y + dy[..., None], (-1, 1)), np.reshape(x + dx[..., None], (-1, 1)), np.reshape(z, (-1, 1)))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def ref_pixelate(img, c, rng=None):
    from PIL import Image
    height, width = img.shape[:2]
    x = Image.fromarray(img).resize((int(width * c), int(height * c)), Image.BOX)
    return np.asarray(x.resize((width, height), Image.BOX)).astype(np.float64)


def ref_jpeg_compression(img, c, rng=None):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, "JPEG", quality=c)
    return np.asarray(Image.open(buffer)).astype(np.float64)


# ---------------------------------------------------------------- by name

REFERENCES = {  # name -> f(img, c, rng) for the corruptions whose only setting is `c`
    "gaussian_noise": ref_gaussian_noise, "shot_noise": ref_shot_noise, "impulse_noise": ref_impulse_noise,
    "speckle_noise": ref_speckle_noise, "defocus_blur": ref_defocus_blur, "glass_blur": ref_glass_blur,
    "motion_blur": ref_motion_blur, "zoom_blur": ref_zoom_blur, "gaussian_blur": ref_gaussian_blur,
    "snow": ref_snow, "spatter": ref_spatter, "brightness": ref_brightness, "contrast": ref_contrast,
    "saturate": ref_saturate, "elastic_transform": ref_elastic_transform, "pixelate": ref_pixelate,
    "jpeg_compression": ref_jpeg_compression,
}


def reference_function(name: str, preset: str) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    """(img HWC uint8, severity, rng) -> float HWC image in 0..255: the reference of `name` in `preset`."""
    table = CONSTANTS[name][preset]
    if name == "fog":
        return lambda img, severity, rng: ref_fog(img, table[severity - 1], rng, FOG_MAPSIZE[preset])
    if name == "frost":
        return lambda img, severity, rng: ref_frost(img, table[severity - 1], rng, FROST_SCALE[preset])
    return lambda img, severity, rng: REFERENCES[name](img, table[severity - 1], rng)


def reference_batch(name: str, images: np.ndarray, severity: int, preset: str, seed: int = 0) -> np.ndarray:
    """The reference over uint8 [B,H,W,3] images, one Generator for the batch, stored as the scripts
    store it (np.uint8 of the float image)."""
    function = reference_function(name, preset)
    rng = np.random.default_rng(seed)
    return np.stack([np.uint8(function(np.ascontiguousarray(image), severity, rng)) for image in images])
