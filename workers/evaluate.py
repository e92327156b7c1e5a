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
        stem = name.removesuffix(".npz")
        if not name.endswith(".npz"):
            return None
        if stem == CLEAN:
            return EvaluationCell(CLEAN, 0)
        corruption, _, severity = stem.rpartition("-")
        return EvaluationCell(corruption, int(severity)) if severity.isdigit() else None


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
        for start in range(0, len(chunk), batch_size):
            yield chunk[start:start + batch_size]


@torch.inference_mode()
def _score(model: torch.nn.Module, batches: Iterator[torch.Tensor], labels: torch.Tensor,
           device: torch.device) -> tuple[dict[str, np.ndarray], float, float]:
    """Logit statistics per image, plus seconds spent producing images vs running the model."""
    confidences, predictions, nll = [], [], []
    produce_s = infer_s = 0.0
    offset = 0
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        produce_s += time.perf_counter() - start
        if batch is None:
            break
        start = time.perf_counter()
        logits = model(batch.to(device, non_blocking=True).float().div_(255)).float()
        target = labels[offset:offset + len(batch)].to(device)
        probabilities = logits.softmax(dim=1)
        confidence, prediction = probabilities.max(dim=1)
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
               *, preset: str, seed: int, batch_size: int, cells_uri: str,
               corrupted_path: str | None = None, limit: int = 0) -> dict[str, float | str | int]:
    """Score one cell and write `<cells_uri>/<cell>.npz`; returns the small summary for progress.

    images: the clean uint8 [N,3,H,W] test set (ignored for materialised cells, which read their
    own rows from `corrupted_path`); model: already on its device, in eval mode.
    """
    device = next(model.parameters()).device
    if cell.corruption == CLEAN:
        batches = _batches(iter([images]), batch_size)
    elif corrupted_path is not None:
        from augmix.datasets.cifar_c import read_corrupted

        corrupted, labels_np = read_corrupted(corrupted_path, cell.corruption, cell.severity, limit=limit)
        labels = torch.from_numpy(labels_np)
        batches = _batches(iter([torch.from_numpy(corrupted).permute(0, 3, 1, 2)]), batch_size)
    else:
        on_device = images.to(device)
        batches = _batches(corrupted_chunks(on_device, cell.corruption, cell.severity, preset, seed), batch_size)
    arrays, produce_s, infer_s = _score(model, batches, labels, device)
    storage.write_bytes(storage.join(cells_uri, cell.file_name),
                        encode_result(cell, arrays, produce_s, infer_s, str(device)))
    return {"cell": cell.key, "images": int(len(arrays["correct"])), "error": float(1 - arrays["correct"].mean()),
            "seconds_produce": produce_s, "seconds_infer": infer_s}


def load_model(state: dict, device: torch.device) -> torch.nn.Module:
    """Rebuild the trained network from the dict training writes (model name, classes, weights)."""
    from augmix.models import build_model

    model = build_model(state["model_name"], num_classes=int(state["num_classes"]), **state.get("model_kwargs", {}))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def evaluation_task(cell: EvaluationCell, state: dict, images: torch.Tensor, labels: torch.Tensor,
                    options: dict) -> dict[str, float | str | int]:
    """What one Ray task runs: rebuild the model from the shared weights and score one cell."""
    torch.set_num_threads(max(1, int(options.get("threads", 1))))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(state, device)
    return score_cell(cell, model, images, labels, preset=options["preset"], seed=options["seed"],
                      batch_size=options["batch_size"], cells_uri=options["cells_uri"],
                      corrupted_path=options.get("corrupted_path"), limit=options.get("limit", 0))
