"""augmix: AugMix (Hendrycks et al., ICLR 2020) in pure PyTorch, usable in any training loop.

`augmix.AugMix` is resolved on first access so that importing a light submodule (augmix.storage,
augmix.metrics, ...) does not pay for torch and the op kernels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from augmix.mix import AugMix

__all__ = ["AugMix"]


def __getattr__(name: str) -> Any:
    if name == "AugMix":
        from augmix.mix import AugMix

        return AugMix
    raise AttributeError(f"module 'augmix' has no attribute {name!r}")
