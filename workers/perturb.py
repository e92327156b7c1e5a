"""The -P worker: score one (perturbation, difficulty) cell of sequences and write its result at once.

Like a -C cell (workers/evaluate.py) it is the unit of scheduling, retry and resumption. Its
sequences are generated chunk by chunk from the clean test set (each chunk of SEQUENCE_CHUNK
videos with its own seeded generator, so the same videos get the same frames whatever the batch
size or device split) or streamed from a CIFAR-10-P style folder. The model sees every frame; what
is kept per video is its top-1 predictions, the share of flipped frame pairs and the mean top-5
distance, so the driver averages videos exactly, and cells of any size aggregate the same way.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from augmix import storage
from augmix.metrics import class_rankings, compares_to_first_frame, video_flips, video_top5_distances
from augmix.perturbations import perturbation_sequence
from workers.evaluate import chunk_seed, load_model

SEQUENCE_CHUNK = 32  # videos per generated chunk: the unit of randomness (31 frames x 32 = 992 model inputs)
TOP5_MIN_CLASSES = 5


@dataclass(frozen=True, order=True)
class PerturbationCell:
    """One -P cell: a perturbation at one difficulty (noise level; 1 for the non-noise ones)."""

    perturbation: str
    difficulty: int

    @property
    def key(self) -> str:
        return f"{self.perturbation}-{self.difficulty}"

    @property
    def file_name(self) -> str:
        return f"{self.key}.npz"

    @staticmethod
    def from_file_name(name: str) -> "PerturbationCell | None":
        """The cell a result file belongs to; None for anything else (temporary files, notes)."""
        stem, dot, suffix = name.rpartition(".")
        perturbation, _, difficulty = stem.rpartition("-")
        if suffix != "npz" or not dot or not perturbation or not difficulty.isdigit():
            return None
        return PerturbationCell(perturbation, int(difficulty))


@dataclass(frozen=True)
class SequenceSettings:
    """What every -P cell of one evaluation shares (everything but the model and the images)."""

    preset: str
    seed: int
    batch_size: int  # frames per model call
    cells_uri: str
    frames: int | None = None  # None = the reference's sequence length
    perturbed_path: str | None = None  # a -P folder: read sequences instead of generating them
    limit: int = 0  # first N videos of a -P file
    threads: int = 1


def sequence_seed(seed: int, cell: PerturbationCell, chunk: int) -> int:
    """A stable seed per (evaluation seed, cell, chunk), distinct from every -C cell's seeds."""
    return chunk_seed(seed, f"p:{cell.perturbation}", cell.difficulty, chunk)


def generated_sequences(images: torch.Tensor, cell: PerturbationCell, preset: str, frames: int | None,
                        seed: int) -> Iterator[torch.Tensor]:
    """uint8 [n, T, 3, H, W] chunks of the cell's sequences, each chunk from its own seeded generator."""
    for chunk, start in enumerate(range(0, len(images), SEQUENCE_CHUNK)):
        generator = torch.Generator(device=images.device)
        generator.manual_seed(sequence_seed(seed, cell, chunk))
        yield perturbation_sequence(images[start:start + SEQUENCE_CHUNK], cell.perturbation, frames=frames,
                                    preset=preset, generator=generator, difficulty=cell.difficulty)


def file_sequences(path: str, cell: PerturbationCell, limit: int, device: torch.device) -> Iterator[torch.Tensor]:
    """The same chunks read from a -P folder (uint8 [N, T, H, W, 3] on disk)."""
    from augmix.datasets.cifar_p import perturbed_shape, read_perturbed

    videos = perturbed_shape(path, cell.perturbation, cell.difficulty)[0]
    videos = min(limit, videos) if limit > 0 else videos
    for start in range(0, videos, SEQUENCE_CHUNK):
        array = read_perturbed(path, cell.perturbation, cell.difficulty, start, min(SEQUENCE_CHUNK, videos - start))
        yield torch.from_numpy(array).permute(0, 1, 4, 2, 3).contiguous().to(device)


@torch.inference_mode()
def frame_logits(model: torch.nn.Module, sequences: torch.Tensor, batch_size: int) -> torch.Tensor:
    """float32 logits [n, T, C] of every frame, batch_size frames per model call."""
    device = next(model.parameters()).device
    frames = sequences.flatten(0, 1)
    logits = [model(batch.to(device, non_blocking=True).float().div_(255)).float() for batch in frames.split(batch_size)]
    return torch.cat(logits).reshape(*sequences.shape[:2], -1)


def score_sequences(model: torch.nn.Module, chunks: Iterator[torch.Tensor], perturbation: str, batch_size: int,
                    ) -> tuple[dict[str, np.ndarray], float, float]:
    """Per video: top-1 predictions [N,T], flip share and mean top-5 distance (NaN below 5 classes),
    plus seconds producing sequences vs in the model (pulling a chunk is what generates it)."""
    noise = compares_to_first_frame(perturbation)
    device = next(model.parameters()).device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    predictions, flips, distances = [], [], []
    produce_s = infer_s = 0.0
    iterator = iter(chunks)
    while True:
        start = time.perf_counter()
        sequences = next(iterator, None)
        synchronize()
        produce_s += time.perf_counter() - start
        if sequences is None:
            break
        start = time.perf_counter()
        logits = frame_logits(model, sequences, batch_size)
        labels = logits.argmax(-1)
        predictions.append(labels.cpu().numpy().astype(np.int32))
        flips.append(video_flips(labels, noise=noise))
        distances.append(video_top5_distances(class_rankings(logits), noise=noise)
                         if logits.shape[-1] >= TOP5_MIN_CLASSES else np.full(len(labels), np.nan))
        synchronize()
        infer_s += time.perf_counter() - start
    return {"prediction": np.concatenate(predictions), "flips": np.concatenate(flips),
            "top5_distance": np.concatenate(distances)}, produce_s, infer_s


def encode_sequence_result(cell: PerturbationCell, arrays: dict[str, np.ndarray], produce_s: float,
                           infer_s: float, device: str) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, perturbation=np.array(cell.perturbation),
                        difficulty=np.array(cell.difficulty), seconds_produce=np.array(produce_s),
                        seconds_infer=np.array(infer_s), device=np.array(device))
    return buffer.getvalue()


def decode_sequence_result(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        result = {key: archive[key] for key in archive.files}
    for key in ("seconds_produce", "seconds_infer"):
        result[key] = float(result[key])
    result["difficulty"] = int(result["difficulty"])
    result["perturbation"], result["device"] = str(result["perturbation"]), str(result["device"])
    return result


def score_perturbation_cell(cell: PerturbationCell, model: torch.nn.Module, images: torch.Tensor,
                            settings: SequenceSettings) -> dict[str, float | str | int]:
    """Score one cell and write `<cells_uri>/<cell>.npz` at once; returns a small summary for progress."""
    device = next(model.parameters()).device
    if settings.perturbed_path is not None:
        chunks = file_sequences(settings.perturbed_path, cell, settings.limit, device)
    else:
        chunks = generated_sequences(images.to(device), cell, settings.preset, settings.frames, settings.seed)
    arrays, produce_s, infer_s = score_sequences(model, chunks, cell.perturbation, settings.batch_size)
    storage.write_bytes(storage.join(settings.cells_uri, cell.file_name),
                        encode_sequence_result(cell, arrays, produce_s, infer_s, str(device)))
    return {"cell": cell.key, "images": int(arrays["prediction"].size),
            "flip_probability": float(arrays["flips"].mean())}


def perturbation_task(cell: PerturbationCell, state: dict, images: torch.Tensor, labels: torch.Tensor,
                      settings: SequenceSettings) -> dict[str, float | str | int]:
    """What one Ray task runs (same signature as workers.evaluate.evaluation_task; labels unused:
    stability compares a model with itself across frames)."""
    torch.set_num_threads(settings.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return score_perturbation_cell(cell, load_model(state, device), images, settings)
