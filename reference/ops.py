"""The AugMix reference's PIL ops (augmentations.py), one image at a time.

`pil_reference` is the Pillow call the reference makes for an op at a given parameter;
`reference_magnitude` is its level -> parameter arithmetic in Python floats. Together they are the
definition of correct for augmix.ops.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def pil_reference(name: str, array: np.ndarray, parameter: float) -> np.ndarray:
    """The op as the AugMix reference runs it on one HxWx3 uint8 image."""
    image = Image.fromarray(array)
    size = image.size
    if name == "autocontrast":
        result = ImageOps.autocontrast(image)
    elif name == "equalize":
        result = ImageOps.equalize(image)
    elif name == "posterize":
        result = ImageOps.posterize(image, int(parameter))
    elif name == "solarize":
        result = ImageOps.solarize(image, int(parameter))
    elif name == "rotate":
        result = image.rotate(parameter, resample=Image.BILINEAR)
    elif name == "shear_x":
        result = image.transform(size, Image.AFFINE, (1, parameter, 0, 0, 1, 0), resample=Image.BILINEAR)
    elif name == "shear_y":
        result = image.transform(size, Image.AFFINE, (1, 0, 0, parameter, 1, 0), resample=Image.BILINEAR)
    elif name == "translate_x":
        result = image.transform(size, Image.AFFINE, (1, 0, parameter, 0, 1, 0), resample=Image.BILINEAR)
    elif name == "translate_y":
        result = image.transform(size, Image.AFFINE, (1, 0, 0, 0, 1, parameter), resample=Image.BILINEAR)
    else:
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[name]
        result = enhancer(image).enhance(parameter)
    return np.asarray(result)


def reference_magnitude(name: str, level: float, sign: int, size: int) -> float:
    """The reference's augmentations.py arithmetic, in Python floats, for one image."""
    if name == "posterize":
        return 4 - int(level * 4 / 10)
    if name == "solarize":
        return 256 - int(level * 256 / 10)
    if name == "rotate":
        return sign * int(level * 30 / 10)
    if name in ("shear_x", "shear_y"):
        return sign * (float(level) * 0.3 / 10.0)
    if name in ("translate_x", "translate_y"):
        return sign * int(level * (size / 3) / 10)
    if name in ("color", "contrast", "brightness", "sharpness"):
        return float(level) * 1.8 / 10.0 + 0.1
    return 0.0
