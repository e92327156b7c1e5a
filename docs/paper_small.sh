#!/usr/bin/env bash
# Standard vs AugMix+JSD on real CIFAR-10 (JPEG-in-Parquet beside the repo), same small model and
# budget; run from the repository root after installing (see README). Results in runs/paper-small.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10/train.parquet}
OUT=${OUT:-runs/paper-small}
COMMON=(--config cifar10_wrn40_2.yaml --set data.name=parquet --set "data.path=$DATA"
  --set data.limit=10000 --set model.name=wrn10_1 --set train.epochs=5 --set train.batch_size=128
  --set scaling.use_gpu=false --set scaling.data_actors=1 --set scaling.cpus_per_data_actor=1
  --set eval.limit=2000 --set eval.batch_size=500)
.venv/bin/augmix run "${COMMON[@]}" --set augmix.enabled=false --set name=standard --out "$OUT/standard"
.venv/bin/augmix run "${COMMON[@]}" --set name=augmix --out "$OUT/augmix"
.venv/bin/augmix report "$OUT/standard" "$OUT/augmix" --names standard augmix --out "$OUT/comparison"
