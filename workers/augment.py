"""The Ray Data stage that turns pieces of the training rows into the views the trainer consumes.

Runs in a pool of CPU actors (`map_batches(AugmentStage, compute=ActorPoolStrategy(...))`, built by
workers.training_data): read a piece's rows (from the object store or a Parquet row group), decode
(if the rows carry encoded bytes), random crop with zero padding + horizontal flip, then AugMix.
Views leave the actor as uint8 [B,3,H,W]: the inputs are 8-bit images and rounding a convex mix to
the nearest 1/255 adds at most 0.5/255 of error (far below the augmentation itself), while it cuts
object-store traffic 4x against float32 and 2x against float16.

Randomness is a torch.Generator per output batch seeded from (seed, epoch, piece): which actor
runs a piece, and when, does not change what it produces, and every epoch sees fresh augmentations.
"""
from __future__ import annotations

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


def decode_batch(images: np.ndarray, image_size: int, source: str = "batch") -> torch.Tensor:
    """Rows of an `image` column (uint8 HWC tensors or encoded bytes) → uint8 [B,3,S,S].

    Images of another size are resized (antialiased bilinear) to image_size x image_size."""
    from augmix.datasets.table import decode_images

    if images.dtype == object:
        images = decode_images(list(images), source=source)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 [B,H,W,3] or encoded bytes, got {images.dtype} "
                         f"{list(images.shape)}")
    tensor = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).contiguous()
    if tensor.shape[2] != image_size or tensor.shape[3] != image_size:
        resized = torch.nn.functional.interpolate(tensor.float(), size=(image_size, image_size), mode="bilinear",
                                                  antialias=True, align_corners=False)
        tensor = resized.round_().clamp_(0, 255).to(torch.uint8)
    return tensor


def decode_rows(batch: dict[str, np.ndarray], image_size: int = 32, image_column: str = "image",
                label_column: str = "label") -> dict[str, np.ndarray]:
    """Validation rows → {clean uint8 [B,3,S,S], label}: stateless, so it runs as plain Ray Data tasks."""
    for column in (image_column, label_column):
        if column not in batch:
            raise ValueError(f"validation rows: column {column!r} missing; columns are {sorted(batch)}")
    images = decode_batch(batch[image_column], image_size, source=f"{image_column} column")
    return {"clean": images.numpy(), "label": np.asarray(batch[label_column]).astype(np.int64)}


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
        seed: int = 0,
        batch_rows: int = 256,
        num_classes: int | None = None,
        on_bad_image: str = "fail",
        threads: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"augment mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
        torch.set_num_threads(threads)
        retain_freed_memory()  # the same large buffers every batch (workers.memory)
        self.reader = None if source is None else PieceReader(source, seed)
        self.mode = mode
        self.augmix = AugMix(width, depth, severity, alpha, all_ops)
        self.image_size = int(image_size)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
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
                    raise bad.at(piece.source, int(piece.rows[row]),
                                 None if piece.paths is None else str(piece.paths[row])) from None
                out = self.views(images, labels, generator)
                yield out | {"epoch": np.full(len(labels), epoch, dtype=np.int64), "row": piece.rows[part],
                             "skipped": skipped}

    def usable(self, raw_images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(decoded images, labels, which rows were skipped): a bad row raises BadRow (batch row),
        or with on_bad_image=skip is filled with another row of the batch so every batch keeps its
        size (all trainers take the same steps) and is counted in `skipped`."""
        labels = np.asarray(labels).astype(np.int64)
        skipped = np.zeros(len(labels), dtype=bool)
        try:
            if self.num_classes is not None:
                check_labels(labels, self.num_classes, "training rows")
            return decode_batch(raw_images, self.image_size, source="training rows"), labels, skipped
        except BadRow:
            if not self.skip_bad:
                raise
        for row in range(len(labels)):  # find every bad row, one at a time
            try:
                if self.num_classes is not None:
                    check_labels(labels[row:row + 1], self.num_classes, "training rows")
                decode_batch(raw_images[row:row + 1], self.image_size)
            except BadRow:
                skipped[row] = True
        good = np.flatnonzero(~skipped)
        if len(good) == 0:
            raise InputError(f"training rows: all {len(labels)} rows of a batch are unusable (data.on_bad_image=skip)")
        fill = good[np.searchsorted(good, np.arange(len(labels))) % len(good)]  # the next good row
        return decode_batch(raw_images[fill], self.image_size), labels[fill], skipped

    def views(self, images: torch.Tensor | np.ndarray, labels: np.ndarray, generator: torch.Generator) -> dict[str, np.ndarray]:
        """Crop + flip, then the mode's views of one batch of rows (decoded here if given raw)."""
        if not isinstance(images, torch.Tensor):
            images = decode_batch(images, self.image_size, source="training rows")
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
