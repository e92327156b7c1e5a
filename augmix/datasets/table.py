"""The in-memory form every reader returns, and the decode / label checks they share.

Images live as uint8 HWC arrays (the layout Ray Data tensor columns and PIL use) or as the encoded
bytes a Parquet file carries; keeping bytes until a worker needs pixels cuts what crosses the
object store roughly tenfold for JPEG-coded CIFAR.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from augmix.errors import BadRow, InputError

JPEG_MAGIC = b"\xff\xd8\xff"
PATH_COLUMN = "path"  # a source column naming each row's image (file name or key), for error messages


@dataclass(frozen=True)
class ImageTable:
    """A labelled image set.

    images: uint8 [N,H,W,3] (decoded) or an object array [N] of encoded bytes (JPEG/PNG/...).
    labels: int64 [N], each in [0, len(classes)).
    classes: the class names; a label is an index into it.
    source: where the rows came from, for error messages.
    paths: each row's file name or key where the source has one (a `path` column), else None.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str = ""
    paths: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim == 4:
            if self.images.dtype != np.uint8 or self.images.shape[-1] != 3:
                raise InputError(
                    f"{self.source}: decoded images must be uint8 [N,H,W,3], got {self.images.dtype} "
                    f"{list(self.images.shape)}"
                )
        elif self.images.ndim != 1 or self.images.dtype != object:
            raise InputError(
                f"{self.source}: images must be uint8 [N,H,W,3] or an object array of encoded bytes, "
                f"got {self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.shape != (len(self.images),):
            raise InputError(
                f"{self.source}: {len(self.labels)} labels for {len(self.images)} images"
            )
        check_labels(self.labels, len(self.classes), self.source)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_encoded(self) -> bool:
        return self.images.ndim == 1

    def decoded(self, size: int | None = None, resize: int | None = None) -> np.ndarray:
        """uint8 [N,H,W,3]; decodes encoded bytes (mixed sizes need `size`, see decode_images)."""
        if not self.is_encoded:
            return self.images
        return decode_images(self.images, source=self.source, size=size, resize=resize)

    def decode(self) -> "ImageTable":
        """The same table with pixels instead of bytes."""
        if not self.is_encoded:
            return self
        return ImageTable(self.decoded(), self.labels, self.classes, self.source, self.paths)

    def take(self, indices: np.ndarray) -> "ImageTable":
        paths = None if self.paths is None else self.paths[indices]
        return ImageTable(self.images[indices], self.labels[indices], self.classes, self.source, paths)

    def path(self, row: int) -> str | None:
        """Row `row`'s file name or key, when the source records one."""
        return None if self.paths is None else str(self.paths[row])

    def head(self, count: int) -> "ImageTable":
        """The first `count` rows (all when count <= 0), the meaning of the config's `limit`."""
        if count <= 0 or count >= len(self):
            return self
        return self.take(np.arange(count))

    def shard(self, index: int, count: int) -> "ImageTable":
        """Contiguous shard `index` of `count` (sizes differ by at most one row)."""
        if count < 1 or not 0 <= index < count:
            raise InputError(f"shard index {index} of {count}: need 0 <= index < count")
        bounds = np.linspace(0, len(self), count + 1).round().astype(np.int64)
        return self.take(np.arange(bounds[index], bounds[index + 1]))

    def numpy_batch(self) -> dict[str, np.ndarray]:
        """{"image", "label"} columns, the batch format of Ray Data's map_batches."""
        return {"image": self.images, "label": self.labels}

    def to_arrow(self):
        """A pyarrow Table {image, label}: binary for encoded images, else the canonical
        `arrow.fixed_shape_tensor` extension of shape [H,W,3]; class names in the schema
        metadata key `classes` (comma separated, as the shared Parquet files carry them)."""
        import pyarrow as pa

        if self.is_encoded:
            image_column = pa.array(list(self.images), type=pa.binary())
        else:
            image_column = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(self.images))
        table = pa.table({"image": image_column, "label": pa.array(self.labels, type=pa.int64())})
        return table.replace_schema_metadata({"classes": ",".join(self.classes)})


def check_labels(labels: np.ndarray, num_classes: int, source: str, row_offset: int = 0) -> None:
    """Raise on the first label outside [0, num_classes), naming its row."""
    if labels.dtype.kind not in "iu":
        raise InputError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row = int(bad[0])
        raise BadRow(source, row + row_offset, f"label {int(labels[row])} out of range, "
                     f"allowed 0..{num_classes - 1} ({num_classes} classes)")


def decode_images(
    encoded: Sequence[bytes] | np.ndarray, source: str = "", row_offset: int = 0, size: int | None = None,
    resize: int | None = None,
) -> np.ndarray:
    """Encoded images → uint8 [N,H,W,3] RGB (grayscale and alpha images converted).

    JPEG batches go through torchvision's batched libjpeg-turbo decoder (about 3x PIL on CIFAR);
    other formats through PIL. A bad image raises ValueError naming its row (row_offset + index).
    Images of mixed sizes (ImageNet-style sources) need `size`: each image is resized (bilinear,
    antialiased) so that its shorter side is `resize` (default `size`) and centre cropped to
    size x size, torchvision's Resize(resize) + CenterCrop(size) (ImageNet evaluation: 256, 224);
    an image already size x size is kept as it is when `resize` is not given. Without `size`
    mixed sizes raise.
    """
    images = decode_image_list(encoded, source, row_offset)
    if size is not None:
        images = [image if resize is None and image.shape[:2] == (size, size) else
                  resize_centre_crop(image, size, resize or size) for image in images]
    return _stack_same_size(images, source, row_offset)


def decode_image_list(encoded: Sequence[bytes] | np.ndarray, source: str = "", row_offset: int = 0) -> list[np.ndarray]:
    """Encoded images → a list of uint8 [H,W,3] RGB arrays, each at its own size."""
    if len(encoded) == 0:
        raise InputError(f"{source}: no images to decode")
    images = None
    if all(isinstance(b, (bytes, bytearray)) and b[:3] == JPEG_MAGIC for b in encoded):
        images = _decode_jpeg_batch(encoded)
    if images is None:
        images = [_decode_one(b, source, row_offset + i) for i, b in enumerate(encoded)]
    return images


def resize_centre_crop(image: np.ndarray, size: int, resize: int | None = None) -> np.ndarray:
    """torchvision's Resize(resize) (shorter side to `resize`, the longer one truncated to keep the
    aspect ratio; PIL bilinear, antialiased) then CenterCrop(size), on one uint8 HWC image."""
    from PIL import Image

    resize = resize or size
    if resize < size:
        raise ValueError(f"resize {resize} is smaller than the crop {size}; allowed: resize >= size")
    height, width = image.shape[:2]
    if height <= width:
        new_height, new_width = resize, int(resize * width / height)
    else:
        new_width, new_height = resize, int(resize * height / width)
    resized = image if (new_height, new_width) == (height, width) else \
        np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def _decode_jpeg_batch(encoded: Sequence[bytes]) -> list[np.ndarray] | None:
    """All images via torchvision, or None when any fails (the caller then finds which)."""
    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    with warnings.catch_warnings():
        # read-only bytes buffers (never written); torchvision 0.29 announces its decoders' move
        # to TorchCodec: PIL takes over here if they go.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tensors = [torch.frombuffer(b, dtype=torch.uint8) for b in encoded]
        try:
            decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB)
        except RuntimeError:
            return None
    return [t.permute(1, 2, 0).numpy() for t in decoded]


def _decode_one(data: bytes, source: str, row: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if data is None:
        raise BadRow(source, row, "image is null")
    if not isinstance(data, (bytes, bytearray)):
        raise BadRow(source, row, f"image must be encoded bytes, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadRow(source, row, f"cannot decode image ({error})") from None


def _stack_same_size(images: list[np.ndarray], source: str, row_offset: int) -> np.ndarray:
    shape = images[0].shape
    for index, image in enumerate(images):
        if image.shape != shape:
            raise BadRow(source, row_offset + index, f"image size {image.shape[1]}x{image.shape[0]} differs from "
                         f"row {row_offset}'s {shape[1]}x{shape[0]}; all images must share one size")
    return np.stack(images)
