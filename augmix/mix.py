"""AugmentAndMix over a whole batch: one sampled plan per sample, ops applied once per (step, op) group.

Sampling and execution are split so that the draw can be checked statistically and the execution
checked against a per-image composition of the same draw:

- `sample_augmix_plan` draws everything the reference algorithm draws per image (Dirichlet chain
  weights, Beta skip weight, chain depths, op choices, levels and signs) as tensors, from a
  torch.Generator, so a seed reproduces a batch exactly.
- `apply_plan` runs the plan. All chains of all samples (and, for `AugMix.triple`, of both views) form
  one working batch of rows; at each chain step the rows are grouped by their op and each op is called
  once on its group, so the Python work per batch is ~ops × depth calls, independent of batch size.
  Ops act on uint8 (PIL semantics); the mixture m·x + (1−m)·Σ w_i chain_i(x) is computed once in float32
  with the 1/255 scale folded into the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from augmix import ops as augmix_ops
from augmix.image_batch import check_image_batch

OPS_WITHOUT_MAGNITUDE = frozenset({"autocontrast", "equalize"})
DEFAULT_MAX_DEPTH = 3  # depth=-1 draws each chain's depth uniformly from 1..DEFAULT_MAX_DEPTH
MIN_LEVEL = 0.1  # the reference's sample_level: U(0.1, severity)


@dataclass(frozen=True)
class AugMixPlan:
    """Everything AugmentAndMix draws for a batch; rows are samples, `ops` names the op indices.

    op_index: int64 [B, width, max_depth], the op applied at each chain step, -1 once the chain ended.
    level: float32 [B, width, max_depth], the severity level of each op application.
    sign: float32 [B, width, max_depth], ±1, the direction of the signed (geometric) ops.
    chain_weights: float32 [B, width], Dirichlet(alpha) weights over the chains.
    skip_weight: float32 [B], Beta(alpha, alpha) weight m of the clean image (m = 1 gives it back).
    """

    ops: tuple[str, ...]
    op_index: Tensor
    level: Tensor
    sign: Tensor
    chain_weights: Tensor
    skip_weight: Tensor

    @property
    def batch(self) -> int:
        return self.op_index.shape[0]

    @property
    def width(self) -> int:
        return self.op_index.shape[1]

    @property
    def depths(self) -> Tensor:
        """int64 [B, width]: the number of ops in each chain."""
        return (self.op_index >= 0).sum(dim=2)

    def to(self, device: torch.device | str) -> "AugMixPlan":
        return AugMixPlan(
            self.ops,
            self.op_index.to(device),
            self.level.to(device),
            self.sign.to(device),
            self.chain_weights.to(device),
            self.skip_weight.to(device),
        )


def log_standard_gamma(alpha: float, shape: tuple[int, ...], generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
    """float64 log of Gamma(alpha, 1) draws of `shape`, exact, driven only by `generator`.

    torch's own gamma sampler takes no generator, so this is Marsaglia & Tsang (2000) rejection for
    shape >= 1, vectorised: a pool of normal/uniform pairs is drawn and the accepted candidates (> 95%)
    are taken in order; independent accepted candidates are independent Gamma draws. alpha < 1 uses Gamma(alpha) = Gamma(alpha + 1)·U^(1/alpha), kept in log
    space so that tiny alphas cannot underflow to 0.
    """
    dtype = torch.float64
    boosted = alpha < 1.0
    d = (alpha + 1.0 if boosted else alpha) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    count = math.prod(shape)
    log_gamma = torch.empty(count, dtype=dtype, device=device)
    filled = 0
    while filled < count:  # one round almost always: the pool covers the ~5% rejections with a margin
        needed = count - filled
        pool = needed + needed // 8 + 32
        x = torch.randn(pool, generator=generator, dtype=dtype, device=device)
        u = 1.0 - torch.rand(pool, generator=generator, dtype=dtype, device=device)  # (0, 1]
        v = (1.0 + c * x) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(dtype).tiny))
        accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        values = log_v[accepted][:needed]
        log_gamma[filled:filled + values.numel()] = values + math.log(d)
        filled += values.numel()
    if boosted:
        u_boost = 1.0 - torch.rand(count, generator=generator, dtype=dtype, device=device)
        log_gamma += torch.log(u_boost) / alpha
    return log_gamma.view(shape)


def sample_mixing_weights(alpha: float, batch: int, width: int, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(chain weights float32 [batch, width] ~ Dirichlet(alpha), skip weight float32 [batch] ~ Beta(alpha, alpha)).

    Both come from one set of Gamma(alpha) draws: a Dirichlet row is normalised Gammas, and
    Beta(alpha, alpha) = G1 / (G1 + G2).
    """
    log_gamma = log_standard_gamma(alpha, (batch, width + 2), generator, device)
    chain_weights = torch.softmax(log_gamma[:, :width], dim=1).float()
    skip_weight = torch.sigmoid(log_gamma[:, width] - log_gamma[:, width + 1]).float()
    return chain_weights, skip_weight


def sample_augmix_plan(
    batch: int,
    width: int,
    depth: int,
    severity: float,
    alpha: float,
    ops: Sequence[str],
    generator: torch.Generator | None = None,
) -> AugMixPlan:
    """Draw one AugmentAndMix plan per sample, as the reference does per image, on the generator's device."""
    device = generator.device if generator is not None else torch.device("cpu")
    max_depth = DEFAULT_MAX_DEPTH if depth == -1 else depth
    chain_weights, skip_weight = sample_mixing_weights(alpha, batch, width, generator, device)
    if depth == -1:
        depths = torch.randint(1, DEFAULT_MAX_DEPTH + 1, (batch, width, 1), generator=generator, device=device)
    else:
        depths = torch.full((batch, width, 1), depth, dtype=torch.long, device=device)
    op_index = torch.randint(0, len(ops), (batch, width, max_depth), generator=generator, device=device)
    steps = torch.arange(max_depth, device=device)
    op_index = torch.where(steps < depths, op_index, -1)
    uniform = torch.rand((batch, width, max_depth), generator=generator, device=device)
    level = MIN_LEVEL + (float(severity) - MIN_LEVEL) * uniform
    sign = torch.where(torch.rand((batch, width, max_depth), generator=generator, device=device) < 0.5, -1.0, 1.0)
    return AugMixPlan(tuple(ops), op_index, level, sign, chain_weights, skip_weight)


def _plan_magnitudes(ops: Sequence[str], op_index: Tensor, level: Tensor, sign: Tensor, height: int,
                     width: int) -> Tensor:
    """float64 [rows, depth]: the PIL parameter of every op application of a plan (0 where none is taken).

    One vectorised magnitude_for per op over the whole plan, instead of one per op call.
    """
    magnitude = torch.zeros(op_index.shape, dtype=torch.float64)
    for op_id, name in enumerate(ops):
        if name not in OPS_WITHOUT_MAGNITUDE:
            size = height if name == "translate_y" else width
            value = augmix_ops.magnitude_for(name, level, sign, size)
            magnitude = torch.where(op_index == op_id, value, magnitude)
    return magnitude


OP_BLOCK_BYTES = 1 << 20
"""uint8 input per op call on CPU. An op makes several passes over float copies of its input; in
blocks of ~1 MiB these stay in cache and their buffers are reused, where a whole group of 224x224
images (tens of MiB of float) goes to memory and page-faults fresh allocations: 2-3x faster."""


def _apply_op(name: str, group: Tensor, magnitude: Tensor | None, out: Tensor) -> None:
    """Run op `name` (unchecked: the plan's magnitudes are valid) on `group` into `out`, block by block on CPU."""
    op = augmix_ops.UNCHECKED_OPS[name]
    block = group.shape[0] if group.is_cuda else max(1, OP_BLOCK_BYTES // group[0].numel())
    for start in range(0, group.shape[0], block):
        rows = slice(start, start + block)
        out[rows].copy_(op(group[rows], None if magnitude is None else magnitude[rows]))


def _gather_rows(images: Tensor, index: Tensor, out: Tensor | None = None) -> Tensor:
    """images[index] along dim 0 (into `out`, contiguous, when given), with rows viewed as int64 words when it allows."""
    if out is None:
        out = images.new_empty((index.shape[0],) + tuple(images.shape[1:]))
    row_bytes = images[0].numel() if images.shape[0] else 0
    if images.is_contiguous() and row_bytes % 8 == 0 and row_bytes > 0 and images.storage_offset() % 8 == 0:
        words = images.view(images.shape[0], -1).view(torch.int64)
        torch.index_select(words, 0, index, out=out.view(index.shape[0], -1).view(torch.int64))
    else:
        torch.index_select(images, 0, index, out=out)
    return out


def _run_chains(images: Tensor, plans: Sequence[AugMixPlan]) -> Tensor:
    """uint8 [V·B·width, 3, H, W]: chain i of sample b of plan v at row (v·B + b)·width + i.

    At each step the rows still running are gathered, sorted by their op, into one working buffer, so
    each op reads a contiguous slice (a view) and no scatter is needed (index_copy_ on rows is ~10x
    slower than index_select). Each step's ops write into their own segment of one output buffer;
    a row's last output stays where it was written, and one final gather collects them in row order.
    Rows whose chain has ended are never moved again. Sorting happens on the CPU copy of the plan, so
    a CUDA batch needs only one small index transfer per step.
    """
    batch, device = images.shape[0], images.device
    chains = plans[0].width
    max_depth = plans[0].op_index.shape[2]
    op_index = torch.cat([plan.op_index.cpu().reshape(-1, max_depth) for plan in plans])
    level = torch.cat([plan.level.cpu().reshape(-1, max_depth) for plan in plans])
    sign = torch.cat([plan.sign.cpu().reshape(-1, max_depth) for plan in plans])
    ops = plans[0].ops
    magnitude = _plan_magnitudes(ops, op_index, level, sign, images.shape[2], images.shape[3]).numpy()
    # The schedule (which rows run which op, where they are read and written) is bookkeeping on a few
    # thousand integers: numpy does each step in microseconds, where torch's advanced indexing costs
    # tens of microseconds per call (~40 such calls per batch).
    op_index = op_index.numpy()
    rows = op_index.shape[0]
    applications = int((op_index >= 0).sum())
    outputs = images.new_empty((applications,) + tuple(images.shape[1:]))
    working = images.new_empty((rows,) + tuple(images.shape[1:]))
    last_output = np.empty(rows, dtype=np.int64)  # row id -> its row in `outputs`
    running = np.arange(rows)  # row ids still running
    source, source_row = images, (running // chains) % batch  # step 0 gathers straight from `images`
    written = 0
    for step in range(max_depth):
        column = op_index[running, step]
        if step > 0:
            still = column >= 0
            running, source_row, column = running[still], source_row[still], column[still]
        count = running.shape[0]
        if count == 0:
            break
        order = np.argsort(column, kind="stable")
        running = running[order]
        current = _gather_rows(source, torch.from_numpy(source_row[order]).to(device), out=working[:count])
        step_outputs = outputs[written:written + count]
        step_magnitude = torch.from_numpy(magnitude[running, step]).to(device)
        start = 0
        for op_id, group_size in enumerate(np.bincount(column, minlength=len(ops)).tolist()):
            if group_size:
                group = slice(start, start + group_size)
                name = ops[op_id]
                _apply_op(name, current[group], None if name in OPS_WITHOUT_MAGNITUDE else step_magnitude[group],
                          step_outputs[group])
                start += group_size
        source_row = np.arange(written, written + count)
        last_output[running] = source_row
        source = outputs
        written += count
    return _gather_rows(outputs, torch.from_numpy(last_output).to(device))


MIX_BLOCK_BYTES = 1 << 20  # float32 output per mixing block: small enough to stay in L2 across the passes


def _mix(images: Tensor, chains: Tensor, plan: AugMixPlan) -> Tensor:
    """m·x/255 + (1−m)·Σ_i w_i·chain_i/255 in float32 [B,3,H,W], straight from the uint8 tensors.

    Type promotion converts the uint8 operands on the fly, so no float copy of the chains is made;
    1/255 and (1−m) are folded into the weights, and the clean term divides by 255/m so that m = 1
    reproduces x/255 bit for bit. The width + 2 elementwise passes run block by block (about 1 MiB of
    output each) so that they hit the cache instead of memory: 4x faster at 224x224, where one image
    is a block; at 32x32 a block holds ~85 images.
    """
    batch = images.shape[0]
    skip = plan.skip_weight.to(images.device, torch.float32).view(batch, 1)
    chain_scale = plan.chain_weights.to(images.device, torch.float32) * ((1.0 - skip) / 255.0)
    clean_divisor = 255.0 / skip
    pixels = images[0].numel()
    flat_images = images.reshape(batch, pixels)
    per_chain = chains.view(batch, plan.width, pixels)
    mixed = torch.empty((batch, pixels), dtype=torch.float32, device=images.device)
    block = batch if images.is_cuda else max(1, MIX_BLOCK_BYTES // (4 * pixels))
    for start in range(0, batch, block):
        rows = slice(start, start + block)
        out = torch.div(flat_images[rows], clean_divisor[rows], out=mixed[rows])
        for chain in range(plan.width):
            out.addcmul_(per_chain[rows, chain], chain_scale[rows, chain:chain + 1])
        out.clamp_(0.0, 1.0)  # float rounding may overshoot 1 by an ulp
    return mixed.view_as(images)


def _augment_views(images: Tensor, plans: Sequence[AugMixPlan]) -> list[Tensor]:
    for plan in plans:
        unknown = sorted(set(plan.ops) - set(augmix_ops.AUGMENTATIONS_ALL))
        if unknown:
            raise ValueError(f"plan ops {unknown} are not known; allowed: {list(augmix_ops.AUGMENTATIONS_ALL)}")
        if plan.batch != images.shape[0]:
            raise ValueError(f"plan batch must equal images batch {images.shape[0]}, got {plan.batch}")
    if images.shape[0] == 0:
        return [torch.empty(images.shape, dtype=torch.float32, device=images.device) for _ in plans]
    chains = _run_chains(images, plans)
    per_view = images.shape[0] * plans[0].width
    return [_mix(images, chains[v * per_view:(v + 1) * per_view], plan) for v, plan in enumerate(plans)]


def _to_unit_float(images: Tensor) -> Tensor:
    return torch.div(images, 255.0)  # promotes to float32 in one pass, same values as ToTensor


def apply_plan(images: Tensor, plan: AugMixPlan) -> Tensor:
    """Run one sampled plan on uint8 [B,3,H,W] images; float32 [B,3,H,W] in [0, 1]."""
    check_image_batch(images, empty_images=False)
    return _augment_views(images, [plan])[0]


def _check_arguments(width: object, depth: object, severity: object, alpha: object) -> None:
    if isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if isinstance(depth, bool) or not isinstance(depth, Integral) or not (depth == -1 or depth >= 1):
        raise ValueError(f"depth must be -1 (uniform 1..3) or an integer >= 1, got {depth!r}")
    if isinstance(severity, bool) or not isinstance(severity, Real) or not 1 <= severity <= 10:
        raise ValueError(f"severity must be a number in [1, 10], got {severity!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")


class AugMix:
    """AugmentAndMix (Hendrycks et al., 2020) on uint8 batches, per-sample randomness, seeded by a Generator."""

    def __init__(self, width: int = 3, depth: int = -1, severity: float = 3, alpha: float = 1.0,
                 all_ops: bool = False) -> None:
        _check_arguments(width, depth, severity, alpha)
        self.width = int(width)
        self.depth = int(depth)
        self.severity = float(severity)
        self.alpha = float(alpha)
        self.all_ops = bool(all_ops)
        self.ops: tuple[str, ...] = tuple(augmix_ops.AUGMENTATIONS_ALL if all_ops else augmix_ops.AUGMENTATIONS)

    def __repr__(self) -> str:
        return (f"AugMix(width={self.width}, depth={self.depth}, severity={self.severity:g}, "
                f"alpha={self.alpha:g}, all_ops={self.all_ops})")

    def sample_plan(self, batch: int, generator: torch.Generator | None = None) -> AugMixPlan:
        return sample_augmix_plan(batch, self.width, self.depth, self.severity, self.alpha, self.ops, generator)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One AugMix view, float32 [B,3,H,W] in [0, 1]."""
        check_image_batch(images, empty_images=False)
        plan = self.sample_plan(images.shape[0], generator)
        return _augment_views(images, [plan])[0]

    def triple(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(clean, aug1, aug2) for the JSD loss; aug1 equals __call__ with the same generator state."""
        check_image_batch(images, empty_images=False)
        plans = [self.sample_plan(images.shape[0], generator), self.sample_plan(images.shape[0], generator)]
        aug1, aug2 = _augment_views(images, plans)
        return _to_unit_float(images), aug1, aug2
