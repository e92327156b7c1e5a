"""`augmix corrupt`: materialise a -C dataset (the CIFAR-10-C .npy layout) and/or a -P dataset
(the CIFAR-10-P layout, eval.suites) from any image dataset.

The images are exactly those the on-the-fly evaluation generates for the same eval.seed (same
per-chunk seeds), so evaluating from the files and on the fly gives the same numbers. With one
suite the files go straight into --out; with both, -C goes into --out and -P into --out/p
(both layouts name files `<name>.npy`, so they cannot share a folder).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from augmix.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
from augmix.datasets.cifar_c import SEVERITIES, write_corrupted
from orchestrator.config import Config
from workers.evaluate import corrupted_chunks
from workers.perturb import generated_sequences

if TYPE_CHECKING:
    from orchestrator.evaluation import TestSet

P_SUBFOLDER = "p"


def corruption_names(config: Config) -> list[str]:
    names = list(config.eval.corruptions or CORRUPTIONS)
    if config.eval.extra:
        names += [n for n in EXTRA_CORRUPTIONS if n not in names]
    return [n for n in ALL_CORRUPTIONS if n in names]


def perturbed_folder(config: Config, out: str) -> str:
    """Where `augmix corrupt` writes the -P set: --out itself, or --out/p beside a -C set."""
    from augmix.storage import join

    return join(out, P_SUBFOLDER) if "c" in config.eval.suites else out


def materialize(config: Config, out: str, split: str = "test") -> list[str]:
    """The suites of eval.suites: -C into out, -P into perturbed_folder(config, out)."""
    from orchestrator.evaluation import load_images

    loaded = load_images(config, split)
    names = materialize_corrupted(config, out, loaded=loaded) if "c" in config.eval.suites else []
    if "p" in config.eval.suites:
        names += materialize_perturbed(config, perturbed_folder(config, out), loaded)
    return names


def materialize_perturbed(config: Config, out: str, loaded: "TestSet") -> list[str]:
    """Write `<out>/<perturbation>[_<difficulty>].npy` ([N, frames, H, W, 3] uint8) and labels.npy."""
    from augmix.datasets.cifar_p import write_perturbed
    from orchestrator.evaluation import p_cells_for

    cells = p_cells_for(config)
    for cell in tqdm(cells, desc=f"materialising -P sequences of {len(loaded.images)} images", unit="cell"):
        chunks = [sequences.permute(0, 1, 3, 4, 2).contiguous().numpy() for sequences in generated_sequences(
            loaded.images, cell, config.eval.preset, config.eval.frames, config.eval.seed)]
        write_perturbed(out, cell.perturbation, cell.difficulty, chunks, loaded.labels.numpy())
    print(f"wrote {len(cells)} -P sequence files of {len(loaded.images)} videos to {out}")
    return [cell.key for cell in cells]


def materialize_corrupted(config: Config, out: str, split: str = "test", loaded: "TestSet | None" = None) -> list[str]:
    """Write `<out>/<corruption>.npy` ([5N,H,W,3] uint8, severities 1-5 stacked) and labels.npy
    (of `loaded` when the caller already holds the split's images, else read here)."""
    from orchestrator.evaluation import load_images

    loaded = loaded or load_images(config, split)
    images, labels = loaded.images, loaded.labels.numpy()
    names = corruption_names(config)
    for name in tqdm(names, desc=f"materialising {len(images)} images", unit="corruption"):
        by_severity = [torch.cat(list(corrupted_chunks(images, name, s, config.eval.preset, config.eval.seed)))
                       .permute(0, 2, 3, 1).contiguous().numpy() for s in SEVERITIES]
        write_corrupted(out, name, by_severity, labels)
    print(f"wrote {len(names)} corruptions x 5 severities of {len(images)} images to {out}")
    return names
