"""The Ray Data stage that turns pieces of the training rows into the views the trainer consumes.

Runs in a pool of CPU actors (`map_batches(AugmentStage, compute=ActorPoolStrategy(...))`, built by
workers.training_data): read a piece's rows (from the object store, a Parquet row group, image files
or a tar shard), decode (if the rows carry encoded bytes), crop + horizontal flip, then AugMix. The
crop is CIFAR's random crop of the zero-padded image (`random_crop_flip`) or ImageNet's
RandomResizedCrop (`random_resized_crop`, for images of any size), both batched with per-sample
parameters.
Views leave the actor as uint8 [B,3,H,W]: the inputs are 8-bit images and rounding a convex mix to
the nearest 1/255 adds at most 0.5/255 of error (far below the augmentation itself), while it cuts
object-store traffic 4x against float32 and 2x against float16.

Randomness is a torch.Generator per output batch seeded from (seed, epoch, piece): which actor
runs a piece, and when, does not change what it produces, and every epoch sees fresh augmentations.
"""
from __future__ import annotations

import math
from typing import Iterator, Literal

import numpy as np
import torch

from augmix.datasets.table import check_labels
from augmix.errors import BadRow, InputError
from augmix.image_batch import to_uint8_rounded
from augmix.mix import AugMix
from workers.memory import retain_freed_memory
from workers.training_data import PIECE_COLUMNS, PieceReader, piece_seed

Mode = Literal["triple", "single", "clean"]
MODES: tuple[str, ...] = ("triple", "single", "clean")
VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "triple": ("clean", "aug1", "aug2"),
    "single": ("aug1",),
    "clean": ("clean",),
}


def stage_mode(augmix_enabled: bool, jsd: bool, placement: str) -> Mode:
    """Which views the data actors emit: AugMix on the trainer or off means clean (crop+flip) only."""
    if not augmix_enabled or placement == "trainer":
        return "clean"
    return "triple" if jsd else "single"


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch (torchvision RandomCrop(size, padding)) and
    horizontal flip with probability 1/2, as one gather: uint8 [B,3,H,W] → uint8 [B,3,H,W]."""
    batch, channels, height, width = images.shape
    if padding == 0 and not flip:
        return images
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding)) if padding else images
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=images.device)
    rows = dy + torch.arange(height, device=images.device)
    cols = dx + torch.arange(width, device=images.device)
    if flip:
        flipped = torch.rand((batch, 1), generator=generator, device=images.device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    b = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
    c = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
    return padded[b, c, rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)]


def resized_crop_params(heights: torch.Tensor, widths: torch.Tensor, scale: tuple[float, float],
                        ratio: tuple[float, float], generator: torch.Generator, attempts: int = 10):
    """torchvision's RandomResizedCrop.get_params for a batch, vectorised: per image, up to `attempts`
    draws of an area fraction ~ U(scale) and an aspect ratio ~ exp(U(log ratio)); the first draw
    whose (h, w) = round(sqrt(area / ratio)), round(sqrt(area * ratio)) fits the image is taken, at a
    uniform position; if none fits, the centre crop of the whole image clamped to the ratio range.
    heights, widths: int64 [B]. Returns int64 (top, left, h, w), each [B]."""
    batch = len(heights)
    height, width = heights.double(), widths.double()
    area = (height * width).unsqueeze(1)
    fraction = torch.empty(batch, attempts, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(batch, attempts, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                             generator=generator)
    aspect = log_ratio.exp()
    w = torch.sqrt(area * fraction * aspect).round()
    h = torch.sqrt(area * fraction / aspect).round()
    fits = (w > 0) & (w <= width.unsqueeze(1)) & (h > 0) & (h <= height.unsqueeze(1))
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first draw that fits
    found = fits.any(dim=1)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    # fallback: the whole image, clamped to the ratio range (torchvision's central crop)
    in_ratio = width / height
    fallback_w = torch.where(in_ratio > ratio[1], (height * ratio[1]).round(), width)
    fallback_h = torch.where(in_ratio < ratio[0], (width / ratio[0]).round(), height)
    h, w = torch.where(found, h, fallback_h), torch.where(found, w, fallback_w)
    position = torch.rand(batch, 2, dtype=torch.float64, generator=generator)
    top = torch.where(found, (position[:, 0] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    left = torch.where(found, (position[:, 1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    return top.long(), left.long(), h.long(), w.long()


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Per-sample resampling matrices [B, out_size, in_size] that resize the window [start, start+length)
    of an axis to out_size pixels: the antialiased bilinear (triangle) filter of PIL and of torch's
    interpolate(antialias=True), widened by the downscale factor, renormalised inside the window."""
    scale = length.double() / out_size  # input pixels per output pixel
    support = scale.clamp(min=1.0)
    centre = start.double().unsqueeze(1) + (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale.unsqueeze(1)
    pixel = torch.arange(in_size, dtype=torch.float64) + 0.5
    weights = (1.0 - ((pixel.view(1, 1, -1) - centre.unsqueeze(2)) / support.view(-1, 1, 1)).abs()).clamp(min=0.0)
    inside = (pixel.view(1, -1) >= start.double().unsqueeze(1)) & (pixel.view(1, -1) < (start + length).double().unsqueeze(1))
    weights = weights * inside.unsqueeze(1)
    return (weights / weights.sum(dim=2, keepdim=True).clamp(min=1e-12)).float()


RESAMPLE_CHUNK = 32  # images resampled together by the matrix kernel: bounds its float copies and weights
DENSE_MAX_PIXELS = 48 * 48  # above this input size the per-image interpolation is faster (see resized_crop)


def resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                 size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop box (top, left, h, w) of every image resized to size x size (antialiased bilinear, as
    torchvision's resized_crop on tensors) and mirrored where `flip`: uint8 [B,3,H,W] of one size →
    uint8 [B,3,size,size].

    Small images (CIFAR-size, up to DENSE_MAX_PIXELS) go through one batched kernel: two matrix
    products (rows, then columns) with per-sample resampling weights, the flip folded into the column
    weights. Larger ones are cropped and resized one by one with torch's uint8 antialiased kernel,
    which touches only the filter's taps: at 500x375 → 224 it takes 0.8 ms an image where the dense
    products take 11.5 ms (one core, measured), while at 32x32 the batched kernel is ~25% faster."""
    if images.shape[-2] * images.shape[-1] > DENSE_MAX_PIXELS:
        return _resized_crop_each(images, top, left, h, w, size, flip)
    if len(images) > RESAMPLE_CHUNK:
        return torch.cat([resized_crop(images[i:i + RESAMPLE_CHUNK], top[i:i + RESAMPLE_CHUNK],
                                       left[i:i + RESAMPLE_CHUNK], h[i:i + RESAMPLE_CHUNK], w[i:i + RESAMPLE_CHUNK],
                                       size, None if flip is None else flip[i:i + RESAMPLE_CHUNK])
                          for i in range(0, len(images), RESAMPLE_CHUNK)])
    rows_low, rows_high = int(top.min()), int((top + h).max())
    cols_low, cols_high = int(left.min()), int((left + w).max())
    window = images[:, :, rows_low:rows_high, cols_low:cols_high].float()
    wy = resize_weights(top - rows_low, h, rows_high - rows_low, size)  # [B,S,H']
    wx = resize_weights(left - cols_low, w, cols_high - cols_low, size)  # [B,S,W']
    if flip is not None:
        wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
    out = torch.matmul(wy.unsqueeze(1), torch.matmul(window, wx.transpose(1, 2).unsqueeze(1)))
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _resized_crop_each(images, top, left, h, w, size: int, flip: torch.Tensor | None) -> torch.Tensor:
    """The large-image path of resized_crop: per image crop + interpolate, then one batched flip."""
    out = torch.empty(len(images), images.shape[1] if isinstance(images, torch.Tensor) else 3, size, size,
                      dtype=torch.uint8)
    for index, (y, x, height, width) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist())):
        crop = images[index][:, y:y + height, x:x + width].unsqueeze(0)
        out[index] = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                                     align_corners=False)[0]
    if flip is not None and bool(flip.any()):
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out


def random_resized_crop(images: torch.Tensor | list[torch.Tensor], size: int, scale: tuple[float, float],
                        ratio: tuple[float, float], flip: bool, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale, ratio) (antialiased bilinear) + RandomHorizontalFlip,
    per sample, for a batch: uint8 [B,3,H,W], or a list of uint8 [3,H_i,W_i] of mixed sizes (decoded
    ImageNet JPEGs) → uint8 [B,3,size,size]. The parameters (boxes and flips) are drawn for the whole
    batch at once; a batch of one small size is resampled by one batched kernel, images of other
    sizes are cropped and resized one by one (see resized_crop), then flipped together."""
    shapes = [tuple(image.shape[-2:]) for image in images]
    heights = torch.tensor([shape[0] for shape in shapes], dtype=torch.int64)
    widths = torch.tensor([shape[1] for shape in shapes], dtype=torch.int64)
    top, left, h, w = resized_crop_params(heights, widths, scale, ratio, generator)
    flips = torch.rand(len(shapes), generator=generator) < 0.5 if flip else None
    if isinstance(images, torch.Tensor):
        return resized_crop(images, top, left, h, w, size, flips)
    return _resized_crop_each(images, top, left, h, w, size, flips)


def decode_batch(images: np.ndarray, image_size: int, source: str = "batch", resize: int | None = None) -> torch.Tensor:
    """Rows of an `image` column (uint8 HWC tensors or encoded bytes) → uint8 [B,3,S,S].

    Encoded images of another size have their shorter side resized to `resize` (default image_size)
    and are centre cropped (Resize + CenterCrop, see augmix.datasets.table.decode_images); decoded
    batches of another size are resized (antialiased bilinear) to image_size x image_size."""
    from augmix.datasets.table import decode_images

    if images.dtype == object:
        images = decode_images(list(images), source=source, size=image_size, resize=resize)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(f"{source}: images must be uint8 [B,H,W,3] or encoded bytes, got {images.dtype} "
                         f"{list(images.shape)}")
    tensor = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).contiguous()
    if tensor.shape[2] != image_size or tensor.shape[3] != image_size:
        resized = torch.nn.functional.interpolate(tensor.float(), size=(image_size, image_size), mode="bilinear",
                                                  antialias=True, align_corners=False)
        tensor = resized.round_().clamp_(0, 255).to(torch.uint8)
    return tensor


def decode_list(images: np.ndarray, source: str = "batch") -> torch.Tensor | list[torch.Tensor]:
    """Rows of an `image` column → uint8 [B,3,H,W] when they are decoded arrays, else a list of
    uint8 [3,H_i,W_i] (encoded images keep their own sizes, for random_resized_crop)."""
    from augmix.datasets.table import decode_image_list

    if images.dtype != object:
        return torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2)
    return [torch.from_numpy(np.require(image, requirements=["W"])).permute(2, 0, 1)
            for image in decode_image_list(list(images), source=source)]


def decode_rows(batch: dict[str, np.ndarray], image_size: int = 32, image_column: str = "image",
                label_column: str = "label", resize: int | None = None) -> dict[str, np.ndarray]:
    """Validation rows → {clean uint8 [B,3,S,S], label}: stateless, so it runs as plain Ray Data tasks."""
    for column in (image_column, label_column):
        if column not in batch:
            raise InputError(f"validation rows: column {column!r} missing; columns are {sorted(batch)}")
    images = decode_batch(batch[image_column], image_size, source=f"{image_column} column", resize=resize)
    return {"clean": images.numpy(), "label": np.asarray(batch[label_column]).astype(np.int64)}


def validation_pieces(pieces: dict[str, np.ndarray], source=None, image_size: int = 32,
                      resize: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Pieces of a validation source (workers.training_data.plain_pieces: image files or tar shards)
    → {clean uint8 [B,3,S,S], label}, read in stored order: Resize + CenterCrop, no randomness."""
    reader = PieceReader(source, 0, shuffle=False)
    for epoch, fragment, start, stop in zip(*(pieces[name].tolist() for name in PIECE_COLUMNS)):
        images, labels = reader.read(epoch, fragment, start, stop)[:2]
        yield {"clean": decode_batch(images, image_size, "validation rows", resize).numpy(),
               "label": np.asarray(labels).astype(np.int64)}


class AugmentStage:
    """Callable class for `Dataset.map_batches` over pieces (workers.training_data): each piece's
    rows → {clean?, aug1?, aug2?, label, epoch, row}, `batch_rows` rows per output batch.

    mode "triple" (AugMix + JSD): clean, aug1, aug2; "single" (AugMix, CE only): aug1;
    "clean" (standard training, or AugMix on the trainer): clean. All views uint8 [B,3,H,W];
    label, epoch and row (the global row index) int64 [B].
    """

    def __init__(
        self,
        source=None,
        mode: Mode = "triple",
        width: int = 3,
        depth: int = -1,
        severity: int = 3,
        alpha: float = 1.0,
        all_ops: bool = False,
        image_size: int = 32,
        crop_padding: int = 4,
        flip: bool = True,
        train_crop: str = "pad",
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        seed: int = 0,
        batch_rows: int = 256,
        num_classes: int | None = None,
        on_bad_image: str = "fail",
        threads: int = 1,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"augment mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
        torch.set_num_threads(threads)
        retain_freed_memory()  # the same large buffers every batch (workers.memory)
        self.reader = None if source is None else PieceReader(source, seed)
        self.mode = mode
        self.augmix = AugMix(width, depth, severity, alpha, all_ops)
        self.image_size = int(image_size)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        if train_crop not in ("pad", "random_resized"):
            raise InputError(f"train_crop {train_crop!r} not allowed; allowed: pad, random_resized")
        self.train_crop = train_crop
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.seed = int(seed)
        self.batch_rows = int(batch_rows)
        self.num_classes = num_classes
        self.skip_bad = on_bad_image == "skip"

    def __call__(self, pieces: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for epoch, fragment, start, stop in zip(*(pieces[name].tolist() for name in PIECE_COLUMNS)):
            piece = self.reader.read(epoch, fragment, start, stop)
            for offset in range(0, len(piece.rows), self.batch_rows):
                part = slice(offset, offset + self.batch_rows)
                generator = torch.Generator().manual_seed(piece_seed(self.seed, epoch, fragment, start + offset))
                try:
                    images, labels, skipped = self.usable(piece.images[part], piece.labels[part])
                except BadRow as bad:  # named by the dataset's row and the image's path, not the batch's
                    row = offset + bad.row
                    path = None if piece.paths is None else piece.paths[row]
                    raise bad.at(piece.source, int(piece.rows[row]),
                                 path.decode() if isinstance(path, bytes) else path) from None
                out = self.views(images, labels, generator)
                yield out | {"epoch": np.full(len(labels), epoch, dtype=np.int64), "row": piece.rows[part],
                             "skipped": skipped}

    def usable(self, raw_images: np.ndarray, labels: np.ndarray):
        """(decoded images, labels, which rows were skipped): a bad row raises BadRow (batch row),
        or with on_bad_image=skip is filled with another row of the batch so every batch keeps its
        size (all trainers take the same steps) and is counted in `skipped`."""
        labels = np.asarray(labels).astype(np.int64)
        skipped = np.zeros(len(labels), dtype=bool)
        try:
            if self.num_classes is not None:
                check_labels(labels, self.num_classes, "training rows")
            return self.decoded(raw_images), labels, skipped
        except BadRow:
            if not self.skip_bad:
                raise
        for row in range(len(labels)):  # find every bad row, one at a time
            try:
                if self.num_classes is not None:
                    check_labels(labels[row:row + 1], self.num_classes, "training rows")
                self.decoded(raw_images[row:row + 1])
            except BadRow:
                skipped[row] = True
        good = np.flatnonzero(~skipped)
        if len(good) == 0:
            raise InputError(f"training rows: all {len(labels)} rows of a batch are unusable (data.on_bad_image=skip)")
        fill = good[np.searchsorted(good, np.arange(len(labels))) % len(good)]  # the next good row
        return self.decoded(raw_images[fill]), labels[fill], skipped

    def decoded(self, raw_images: np.ndarray) -> torch.Tensor | list[torch.Tensor]:
        """Pixels of a batch of rows: a batch tensor, or (random_resized) each image at its own size."""
        if self.train_crop == "random_resized":
            return decode_list(raw_images, source="training rows")
        return decode_batch(raw_images, self.image_size, source="training rows")

    def views(self, images, labels: np.ndarray, generator: torch.Generator) -> dict[str, np.ndarray]:
        """Crop + flip, then the mode's views of one batch of rows (decoded here if given raw)."""
        if isinstance(images, np.ndarray):
            images = self.decoded(images)
        if self.train_crop == "random_resized":
            images = random_resized_crop(images, self.image_size, self.crop_scale, self.crop_ratio, self.flip,
                                         generator)
        else:
            images = random_crop_flip(images, self.crop_padding, self.flip, generator)
        out: dict[str, np.ndarray] = {"label": np.asarray(labels).astype(np.int64)}
        if self.mode == "clean":
            out["clean"] = images.numpy()
        elif self.mode == "single":
            out["aug1"] = to_uint8_rounded(self.augmix(images, generator)).numpy()
        else:
            _, aug1, aug2 = self.augmix.triple(images, generator)
            out["clean"] = images.numpy()
            out["aug1"] = to_uint8_rounded(aug1).numpy()
            out["aug2"] = to_uint8_rounded(aug2).numpy()
        return out
