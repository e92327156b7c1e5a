"""The AugMix paper's classifiers, chosen by name: `build_model(name, num_classes, **options)`.

Every model takes float images in [0, 1], shaped [B, 3, H, W], and normalises them itself (its
first module is a `Normalize` with buffers `mean`/`std`), so training, evaluation and any worker
feed the same tensors and cannot disagree on preprocessing. CIFAR models default to the AugMix
recipe's mean = std = 0.5; the torchvision ResNets to the ImageNet statistics; both are options.

Names (`MODELS` lists the usual ones):
  wrn{depth}_{widen}   WideResNet, depth 6n+4 (wrn40_2: the paper's; wrn16_2, wrn10_1: small, fast)
  allconv              AllConvNet (96/192 channels, the reference's)
  densenet_bc_{depth}  DenseNet-BC, depth 6n+4, growth_rate 12 by default (densenet_bc_100)
  resnext29_32x4d      the paper's ResNeXt-29 (32x4), built as the reference builds it
  resnet{18,34,50,101,152}  torchvision ResNets for larger images; cifar_stem=True for 32x32
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from torch import nn

from augmix.models.allconv import AllConvNet
from augmix.models.densenet import DenseNetBC
from augmix.models.layers import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
)
from augmix.models.resnext import CifarResNeXt
from augmix.models.wideresnet import WideResNet

__all__ = [
    "check_model_name",
    "MODELS",
    "check_model_options",
    "AllConvNet",
    "CifarResNeXt",
    "DenseNetBC",
    "Normalize",
    "TorchvisionResNet",
    "WideResNet",
    "build_model",
    "count_parameters",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

MODELS: tuple[str, ...] = (
    "wrn40_2",
    "allconv",
    "densenet_bc_100",
    "resnext29_32x4d",
    "resnet18",
    "resnet50",
    "wrn16_2",
    "wrn10_1",
)

RESNET_DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)


def __getattr__(name: str) -> object:
    # torchvision is imported only when a ResNet is asked for: importing it pulls in torch._dynamo
    # (~2 s of CPU), which every Ray worker that builds a CIFAR model would otherwise pay at start.
    if name == "TorchvisionResNet":
        from augmix.models.resnet import TorchvisionResNet

        return TorchvisionResNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (what the papers' tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _resolve(name: str) -> tuple[Callable[..., nn.Module], dict[str, int]]:
    """The constructor a name stands for, and the arguments the name itself fixes."""
    if name == "allconv":
        return AllConvNet, {}
    if name == "resnext29_32x4d":
        # The paper's "ResNeXt-29 (32x4)" is the reference's resnext29(): 4 groups, base width 32.
        return CifarResNeXt, {"depth": 29, "cardinality": 4, "base_width": 32}
    if match := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        return WideResNet, {"depth": int(match[1]), "widen_factor": int(match[2])}
    if match := re.fullmatch(r"densenet_bc_(\d+)", name):
        return DenseNetBC, {"depth": int(match[1])}
    if (match := re.fullmatch(r"resnet(\d+)", name)) and int(match[1]) in RESNET_DEPTHS:
        from augmix.models.resnet import TorchvisionResNet

        return TorchvisionResNet, {"depth": int(match[1])}
    raise ValueError(
        f"model name {name!r} is not allowed; use one of {', '.join(MODELS)} "
        f"(or wrn{{6n+4}}_{{widen}}, densenet_bc_{{6n+4}}, resnet{{{'|'.join(map(str, RESNET_DEPTHS))}}})"
    )


def check_model_name(name: str) -> str:
    """The normalised name if build_model accepts it, else the one-line ValueError it would raise."""
    normalised = name.strip().lower()
    _resolve(normalised)
    return normalised


def check_model_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """`options` checked against the model's constructor: unknown names raise one line listing the
    allowed ones; a value is converted to the type of the parameter's default where it reads as one
    (YAML reads `1e-3` as a string: it would reach the model as '1e-3')."""
    constructor, fixed = _resolve(name.strip().lower())
    parameters = {key: value for key, value in inspect.signature(constructor).parameters.items()
                  if key not in fixed and key != "num_classes"}
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"model {name!r} option(s) {', '.join(unknown)} not allowed; allowed: {', '.join(parameters)}")
    return {key: _as_default_type(name, key, value, parameters[key].default) for key, value in options.items()}


def _as_default_type(model: str, key: str, value: object, default: object) -> object:
    kind = type(default)
    if default is inspect.Parameter.empty or default is None or isinstance(value, kind) and not isinstance(value, bool) \
            or kind is bool and isinstance(value, bool):
        return value
    try:
        if kind is bool:
            raise ValueError
        if kind in (int, float) and not isinstance(value, bool):
            converted = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
            return converted
        if kind in (tuple, list) and isinstance(value, (list, tuple)):
            return kind(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"model {model!r} option {key}={value!r}: expected {kind.__name__} like its default {default!r}")


def build_model(name: str, num_classes: int, **options: object) -> nn.Module:
    """A freshly initialised model by name; `options` go to its constructor (e.g. dropout, mean, std).

    Raises ValueError for an unknown name, a bad num_classes, or an option the model does not take.
    """
    if not isinstance(name, str):
        raise ValueError(f"model name {name!r} is not allowed; use one of {', '.join(MODELS)}")
    constructor, fixed = _resolve(name.strip().lower())
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes {num_classes!r} is not allowed; use an integer >= 1")
    settable = [p for p in inspect.signature(constructor).parameters if p not in fixed and p != "num_classes"]
    unknown = sorted(set(options) - set(settable))
    if unknown:
        raise ValueError(f"model {name!r} option(s) {', '.join(unknown)} not allowed; allowed: {', '.join(settable)}")
    return constructor(**fixed, num_classes=num_classes, **options)
