"""The evaluation worker: score one (corruption, severity) cell and write its result at once.

A cell is the unit of scheduling, retry and resumption: it owns its corrupted images (generated
from the clean test set with a seed of its own, or read from a materialised -C folder), runs the
model over them and writes one small .npz under the evaluation's cells/ folder. A rerun lists
that folder and skips what is there, so a killed evaluation loses at most the cells in flight.
"""
from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from augmix import storage
from augmix.corruptions import corrupt

CLEAN = "clean"
CHUNK_SIZE = 1000  # corruption randomness is drawn per chunk of this many images: batch-size independent


@dataclass(frozen=True, order=True)
class EvaluationCell:
    """One entry of the corruption × severity table (clean is severity 0)."""

    corruption: str
    severity: int

    @property
    def key(self) -> str:
        return CLEAN if self.corruption == CLEAN else f"{self.corruption}-{self.severity}"

    @property
    def file_name(self) -> str:
        return f"{self.key}.npz"

    @staticmethod
    def from_file_name(name: str) -> "EvaluationCell | None":
        """The cell a result file belongs to; None for anything else (temporary files, notes)."""
        if not name.endswith(".npz"):
            return None
        stem = name.removesuffix(".npz")
        if stem == CLEAN:
            return EvaluationCell(CLEAN, 0)
        corruption, _, severity = stem.rpartition("-")
        return EvaluationCell(corruption, int(severity)) if corruption and severity.isdigit() else None


@dataclass(frozen=True)
class CellSettings:
    """What every cell of one evaluation shares (everything but the model and the images)."""

    preset: str
    seed: int
    batch_size: int
    cells_uri: str
    corrupted_path: str | None = None  # a -C folder: read cells from it instead of generating them
    limit: int = 0  # first N images per severity of a -C folder
    threads: int = 1


def chunk_seed(seed: int, corruption: str, severity: int, chunk: int) -> int:
    """A stable seed per (evaluation seed, cell, chunk): the same images get the same corruption
    whether they are generated for evaluation, materialised to .npy, or scored in other batches."""
    return zlib.crc32(f"{seed}:{corruption}:{severity}:{chunk}".encode()) & 0x7FFFFFFF


def corrupted_chunks(images: torch.Tensor, corruption: str, severity: int, preset: str,
                     seed: int) -> Iterator[torch.Tensor]:
    """Corrupt uint8 [N,3,H,W] images chunk by chunk (each chunk with its own seeded generator)."""
    for chunk, start in enumerate(range(0, len(images), CHUNK_SIZE)):
        generator = torch.Generator(device=images.device)
        generator.manual_seed(chunk_seed(seed, corruption, severity, chunk))
        yield corrupt(images[start:start + CHUNK_SIZE], corruption, severity, preset=preset, generator=generator)


def _batches(chunks: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    for chunk in chunks:
        yield from chunk.split(batch_size)


def cell_images(cell: EvaluationCell, images: torch.Tensor, labels: torch.Tensor, settings: CellSettings,
                device: torch.device) -> tuple[Iterator[torch.Tensor], torch.Tensor]:
    """(lazy uint8 image chunks, labels) of one cell: clean, read from a -C folder, or generated."""
    if cell.corruption == CLEAN:
        return iter([images.to(device)]), labels
    if settings.corrupted_path is not None:
        from augmix.datasets.cifar_c import read_corrupted

        corrupted, file_labels = read_corrupted(settings.corrupted_path, cell.corruption, cell.severity,
                                                limit=settings.limit)
        chunk = torch.from_numpy(np.ascontiguousarray(corrupted)).permute(0, 3, 1, 2).to(device)
        return iter([chunk]), torch.from_numpy(file_labels)
    chunks = corrupted_chunks(images.to(device), cell.corruption, cell.severity, settings.preset, settings.seed)
    return chunks, labels


@torch.inference_mode()
def score_batches(model: torch.nn.Module, batches: Iterator[torch.Tensor], labels: torch.Tensor,
                  ) -> tuple[dict[str, np.ndarray], float, float]:
    """Per-image confidence, prediction, correctness and NLL, plus the seconds spent producing
    images vs in the model (pulling the next batch is what runs the lazy corruption)."""
    device = next(model.parameters()).device
    confidences, predictions, nll = [], [], []
    produce_s = infer_s = 0.0
    offset = 0
    iterator = iter(batches)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        synchronize()  # CUDA kernels run asynchronously: charge the corruption to producing, not to the model
        produce_s += time.perf_counter() - start
        if batch is None:
            break
        start = time.perf_counter()
        logits = model(batch.to(device, non_blocking=True).float().div_(255)).float()
        target = labels[offset:offset + len(batch)].to(device)
        confidence, prediction = logits.softmax(dim=1).max(dim=1)
        nll.append(F.cross_entropy(logits, target, reduction="none").cpu())
        confidences.append(confidence.cpu())
        predictions.append(prediction.cpu())
        infer_s += time.perf_counter() - start
        offset += len(batch)
    prediction = torch.cat(predictions)
    return {
        "confidence": torch.cat(confidences).numpy().astype(np.float32),
        "prediction": prediction.numpy().astype(np.int32),
        "correct": (prediction == labels[:offset]).numpy(),
        "nll": torch.cat(nll).numpy().astype(np.float32),
    }, produce_s, infer_s


def encode_result(cell: EvaluationCell, arrays: dict[str, np.ndarray], produce_s: float, infer_s: float,
                  device: str) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, **arrays, corruption=np.array(cell.corruption), severity=np.array(cell.severity),
        error=np.array(1.0 - arrays["correct"].mean()), seconds_produce=np.array(produce_s),
        seconds_infer=np.array(infer_s), device=np.array(device),
    )
    return buffer.getvalue()


def decode_result(data: bytes) -> dict[str, np.ndarray | float | str | int]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        result = {key: archive[key] for key in archive.files}
    for key in ("error", "seconds_produce", "seconds_infer"):
        result[key] = float(result[key])
    result["severity"] = int(result["severity"])
    result["corruption"] = str(result["corruption"])
    result["device"] = str(result["device"])
    return result


def score_cell(cell: EvaluationCell, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               settings: CellSettings) -> dict[str, float | str | int]:
    """Score one cell and write `<cells_uri>/<cell>.npz` at once; returns a small summary for progress.

    images: the clean uint8 [N,3,H,W] test set (unused by cells read from a -C folder);
    model: already on its device, in eval mode.
    """
    device = next(model.parameters()).device
    chunks, cell_labels = cell_images(cell, images, labels, settings, device)
    arrays, produce_s, infer_s = score_batches(model, _batches(chunks, settings.batch_size), cell_labels)
    storage.write_bytes(storage.join(settings.cells_uri, cell.file_name),
                        encode_result(cell, arrays, produce_s, infer_s, str(device)))
    return {"cell": cell.key, "images": int(len(arrays["correct"])), "error": float(1 - arrays["correct"].mean()),
            "seconds_produce": produce_s, "seconds_infer": infer_s}


def model_options(state: dict) -> dict:
    """build_model options the run was trained with (config model.options), {} when absent."""
    config = state.get("config") or {}
    return dict((config.get("model") or {}).get("options") or {})


def load_model(state: dict, device: torch.device) -> torch.nn.Module:
    """Rebuild the trained network from the dict training writes (model name, classes, options, weights)."""
    from augmix.models import build_model

    model = build_model(state["model_name"], num_classes=int(state["num_classes"]), **model_options(state))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def evaluation_task(cell: EvaluationCell, state: dict, images: torch.Tensor, labels: torch.Tensor,
                    settings: CellSettings) -> dict[str, float | str | int]:
    """What one Ray task runs: rebuild the model from the shared weights and score one cell.

    Ray hides GPUs from tasks that did not ask for one, so CUDA being visible here means this
    cell was scheduled on a GPU (share)."""
    torch.set_num_threads(settings.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return score_cell(cell, load_model(state, device), images, labels, settings)
