#!/usr/bin/env bash
# Standard vs AugMix+JSD on real CIFAR-10 (JPEG-in-Parquet), same small model and budget.
set -euo pipefail
COMMON=(--config cifar10_wrn40_2.yaml --set data.name=parquet --set data.path=/work/shared/data/cifar10/train.parquet
  --set data.limit=10000 --set model.name=wrn10_1 --set train.epochs=5 --set train.batch_size=128
  --set scaling.use_gpu=false --set scaling.data_actors=1 --set scaling.cpus_per_data_actor=1
  --set eval.limit=2000 --set eval.batch_size=500)
/work/main/.venv/bin/python -m orchestrator.cli run "${COMMON[@]}" --set augmix.enabled=false --set name=standard --out /tmp/paper/standard
/work/main/.venv/bin/python -m orchestrator.cli run "${COMMON[@]}" --set name=augmix --out /tmp/paper/augmix
/work/main/.venv/bin/python -m orchestrator.cli report /tmp/paper/standard /tmp/paper/augmix --names standard augmix --out /tmp/paper/comparison
