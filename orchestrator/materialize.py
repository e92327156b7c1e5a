"""`augmix corrupt`: materialise a -C dataset (the CIFAR-10-C .npy layout) from any image dataset.

The images are exactly those the on-the-fly evaluation generates for the same eval.seed (same
per-chunk seeds), so evaluating from the files and on the fly gives the same numbers.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from augmix.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
from augmix.datasets.cifar_c import SEVERITIES, write_corrupted
from orchestrator.config import Config
from workers.evaluate import corrupted_chunks


def corruption_names(config: Config) -> list[str]:
    names = list(config.eval.corruptions or CORRUPTIONS)
    if config.eval.extra:
        names += [n for n in EXTRA_CORRUPTIONS if n not in names]
    return [n for n in ALL_CORRUPTIONS if n in names]


def materialize_corrupted(config: Config, out: str, split: str = "test") -> list[str]:
    """Write `<out>/<corruption>.npy` ([5N,H,W,3] uint8, severities 1-5 stacked) and labels.npy."""
    from orchestrator.evaluation import load_images

    loaded = load_images(config, split)
    images, labels = loaded.images, loaded.labels.numpy()
    names = corruption_names(config)
    for name in tqdm(names, desc=f"materialising {len(images)} images", unit="corruption"):
        by_severity = [torch.cat(list(corrupted_chunks(images, name, s, config.eval.preset, config.eval.seed)))
                       .permute(0, 2, 3, 1).contiguous().numpy() for s in SEVERITIES]
        write_corrupted(out, name, by_severity, labels)
    print(f"wrote {len(names)} corruptions x 5 severities of {len(images)} images to {out}")
    return names
