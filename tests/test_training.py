"""Training pieces without a cluster (the augment stage, the schedule, the step) and the driver-mode
loop (num_workers=0) with its checkpoint → model.pt round trip."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from augmix.image_batch import to_uint8_rounded
from augmix.loss import augmix_loss
from augmix.mix import AugMix
from workers.augment import (
    VIEW_COLUMNS,
    AugmentStage,
    decode_batch,
    decode_rows,
    random_crop_flip,
    stage_mode,
)
from workers.train_loop import (
    cosine_factor,
    optimisation_step,
    scaled_lr,
    step_loss,
    training_inputs,
)

torch.set_num_threads(1)


def _position_images(batch: int, size: int = 8) -> torch.Tensor:
    """Pixel (y, x) holds 1 + y*size + x in every channel: a crop's origin can be read back."""
    grid = (1 + torch.arange(size * size)).view(1, 1, size, size).to(torch.uint8)
    return grid.expand(batch, 3, size, size).contiguous()


def test_random_crop_flip_takes_windows_of_the_zero_padded_image():
    images = _position_images(64)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, padding=2, flip=True, generator=generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets, flips = set(), 0
    for b in range(out.shape[0]):
        windows = {(dy, dx): padded[b, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)}
        matches = [(dy, dx, f) for (dy, dx), w in windows.items() for f in (False, True)
                   if torch.equal(out[b], w.flip(2) if f else w)]
        assert matches, f"sample {b} is not a (flipped) window of the padded image"
        offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(offsets) > 10 and 10 < flips < 54  # per-sample offsets and flips, not one per batch


def test_random_crop_flip_without_padding_or_flip_is_identity():
    images = _position_images(4)
    assert torch.equal(random_crop_flip(images, 0, False, torch.Generator()), images)


def test_to_uint8_rounds_to_nearest_level():
    values = torch.tensor([0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 1.0, 1.2, -0.1])
    assert to_uint8_rounded(values).tolist() == [0, 0, 1, 255, 255, 0]


@pytest.mark.parametrize("enabled,jsd,placement,mode", [
    (True, True, "data", "triple"), (True, False, "data", "single"),
    (False, True, "data", "clean"), (True, True, "trainer", "clean"),
])
def test_stage_mode(enabled, jsd, placement, mode):
    assert stage_mode(enabled, jsd, placement) == mode


def _batch(count: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, count).astype(np.int64)}


def _views(stage: AugmentStage, batch: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    return stage.views(batch["image"], batch["label"], torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["triple", "single", "clean"])
def test_augment_stage_emits_uint8_views(mode):
    batch = _batch()
    out = _views(AugmentStage(mode=mode), batch)
    assert set(out) == {"label", *VIEW_COLUMNS[mode]}
    for column in VIEW_COLUMNS[mode]:
        assert out[column].dtype == np.uint8 and out[column].shape == (16, 3, 32, 32)
    np.testing.assert_array_equal(out["label"], batch["label"])


def test_augment_stage_matches_augmix_on_the_cropped_images():
    """The stage is crop/flip then AugMix.triple, rounded to uint8, from one seeded generator."""
    batch = _batch(8)
    out = _views(AugmentStage(width=2, severity=2), batch, seed=5)
    generator = torch.Generator().manual_seed(5)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
    cropped = random_crop_flip(images, 4, True, generator)
    _, aug1, aug2 = AugMix(width=2, severity=2).triple(cropped, generator)
    np.testing.assert_array_equal(out["clean"], cropped.numpy())
    np.testing.assert_array_equal(out["aug1"], to_uint8_rounded(aug1).numpy())
    np.testing.assert_array_equal(out["aug2"], to_uint8_rounded(aug2).numpy())
    assert not np.array_equal(out["aug1"], out["aug2"])


def test_validation_rows_decode_png_without_cropping():
    from PIL import Image

    batch = _batch(4)
    encoded = []
    for image in batch["image"]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    out = decode_rows({"image": np.array(encoded, dtype=object), "label": batch["label"]})
    np.testing.assert_array_equal(out["clean"], batch["image"].transpose(0, 3, 1, 2))


def test_decode_batch_resizes_to_image_size_and_rejects_bad_bytes():
    assert decode_batch(_batch(2)["image"], 16).shape == (2, 3, 16, 16)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_batch(1)["image"][0]).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="row 1"):
        decode_batch(np.array([buffer.getvalue(), b"not an image"], dtype=object), 32)


def test_unknown_stage_mode_is_rejected():
    with pytest.raises(ValueError, match="allowed: triple, single, clean"):
        AugmentStage(mode="double")


def test_schedule_and_batch_scaling():
    assert scaled_lr(0.1, 256) == pytest.approx(0.2)
    assert cosine_factor(0, 100) == 1.0 and cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(100, 100) == pytest.approx(0.0) and cosine_factor(150, 100) == pytest.approx(0.0)


def test_one_forward_pass_on_the_triple_gives_the_augmix_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    batch = {name: torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8) for name in ("clean", "aug1", "aug2")}
    batch["label"] = torch.tensor([0, 1, 2, 3])
    inputs, views = training_inputs(batch, torch.device("cpu"), None, None)
    assert views == 3 and inputs.shape == (12, 3, 8, 8) and inputs.max() <= 1.0
    total, ce, jsd = step_loss(model(inputs), batch["label"], views, 12.0)
    expected = augmix_loss(*[model(batch[n].float() / 255) for n in ("clean", "aug1", "aug2")], batch["label"], 12.0)
    torch.testing.assert_close(torch.stack([total, ce, jsd]), torch.stack(expected))
    single, single_ce, zero = step_loss(model(inputs[:4]), batch["label"], 1, 12.0)
    assert float(zero) == 0.0 and torch.equal(single, single_ce)


def test_optimisation_step_returns_the_loss_parts_and_learns():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    batch = {name: torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8) for name in ("clean", "aug1", "aug2")}
    inputs, views = training_inputs(batch, torch.device("cpu"), None, None)
    targets = torch.tensor([0, 1, 2, 3])
    sums = [optimisation_step(model, optimizer, scheduler, scaler, inputs, targets, views, 12.0, False)
            for _ in range(5)]
    assert all(s.dtype == torch.float32 and s.shape == (3,) for s in sums)
    torch.testing.assert_close(sums[0][0], sums[0][1] + 12.0 * sums[0][2])
    assert float(sums[-1][1]) < float(sums[0][1])  # the clean CE falls on a batch seen repeatedly


def test_trainer_placement_runs_augmix_in_the_loop():
    clean = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    inputs, views = training_inputs({"clean": clean}, torch.device("cpu"), AugMix(), torch.Generator().manual_seed(1))
    assert views == 3 and inputs.dtype == torch.float32 and inputs.shape == (12, 3, 8, 8)
    torch.testing.assert_close(inputs[:4], clean.float() / 255)
    assert not torch.equal(inputs[4:8], inputs[8:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(("placement", "channels_last"), [("data", False), ("trainer", False), ("data", True)])
def test_amp_training_step_on_cuda_learns_a_fixed_batch(placement, channels_last, cifar_images):
    """The loop's step as it runs on a GPU trainer: fp16 autocast + GradScaler, AugMix on the device
    (placement trainer) or uint8 triples copied in (placement data), in NCHW or NHWC (channels_last);
    the loss must stay finite and fall on a batch it sees repeatedly."""
    from augmix.models import build_model

    device = torch.device("cuda")
    images, labels = cifar_images[0][:64], cifar_images[1][:64]
    batch = {"clean": images, "label": labels}
    if placement == "data":
        _, aug1, aug2 = AugMix().triple(images, torch.Generator().manual_seed(0))
        batch.update(aug1=to_uint8_rounded(aug1), aug2=to_uint8_rounded(aug2))
    model = build_model("wrn16_2", 10).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda")
    augmix = AugMix() if placement == "trainer" else None
    with torch.no_grad(), torch.autocast(device_type="cuda"):
        assert model(images[:2].to(device).float()).dtype == torch.float16
    losses = []
    for step in range(12):
        generator = torch.Generator(device).manual_seed(step) if augmix else None
        inputs, views = training_inputs(batch, device, augmix, generator, channels_last)
        assert inputs.is_cuda and views == 3
        assert inputs.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        sums = optimisation_step(model, optimizer, scheduler, scaler, inputs, labels.to(device), views, 12.0, True)
        losses.append(float(sums[0]))
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_driver_mode_training_writes_a_model_that_reproduces_its_validation_error(ray_cluster, tmp_path):
    """num_workers=0 runs the loop in the driver: fast, and enough to check model.pt round-trips."""
    from augmix.models import build_model
    from orchestrator.config import build_config
    from orchestrator.pipeline import read_training_table, split_tables
    from orchestrator.training import build_run_config, train
    from workers.train_loop import validation_counts

    config = build_config({
        "name": "driver_mode", "data": {"synthetic_train_size": 400, "validation_fraction": 0.25},
        "model": {"name": "wrn10_1"}, "augmix": {"jsd": False},
        "train": {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3, "validate_corrupted": True},
        "scaling": {"num_workers": 0, "data_actors": 1, "cpus_per_data_actor": 0.5, "data_batch_size": 64},
        "storage": {"uri": str(tmp_path / "run")},
    })
    result = train(config, run_config=build_run_config(config, controller_failure_limit=0))
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    assert all(m["steps"] == 3 and m["train_jsd"] == 0.0 for m in result.metrics)
    assert all(0.0 <= m["val_corrupted_error"] <= 1.0 for m in result.metrics)  # the sweep objective
    assert all(m["val_corrupted_nll"] > 0.0 for m in result.metrics)  # its tie-breaker
    saved = torch.load(result.model_uri, weights_only=False)
    assert saved["model_name"] == "wrn10_1" and saved["num_classes"] == 10
    assert saved["config"]["augmix"]["jsd"] is False
    model = build_model(saved["model_name"], saved["num_classes"])
    model.load_state_dict(saved["state_dict"])
    _, validation = split_tables(read_training_table(config.data), 0.25, config.data.seed)
    images = torch.from_numpy(validation.images).permute(0, 3, 1, 2).contiguous()
    wrong, total, _, _ = validation_counts(model, [{"clean": images, "label": torch.from_numpy(validation.labels)}],
                                     torch.device("cpu"), amp=False)
    assert total == 100 and wrong / total == pytest.approx(result.final_val_error)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_large_parquet_streams_from_storage_with_files_held_out(ray_cluster, cifar10_dir, tmp_path, monkeypatch):
    """Above STREAM_PARQUET_BYTES a Parquet source is read by Ray Data, validation = whole files."""
    import pyarrow.parquet as pq

    from orchestrator import pipeline
    from orchestrator.config import build_config

    source = pq.read_table(cifar10_dir / "train.parquet").slice(0, 400)
    folder = tmp_path / "shards"
    folder.mkdir()
    for index in range(4):
        shard = source.slice(100 * index, 100).rename_columns(["jpeg", "y", "path"])
        shard = shard.replace_schema_metadata(source.schema.metadata)  # keeps the class names
        pq.write_table(shard, folder / f"part-{index}.parquet")
    monkeypatch.setattr(pipeline, "STREAM_PARQUET_BYTES", 0)
    config = build_config({"data": {"name": "parquet", "path": str(folder), "image_column": "jpeg",
                                    "label_column": "y", "validation_fraction": 0.25},
                           "scaling": {"data_actors": 1, "cpus_per_data_actor": 0.5, "data_batch_size": 50}})
    data = pipeline.build_datasets(config)
    assert (data.train_size, data.validation_size) == (300, 100)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    stream = data.stream
    assert stream.source.size == 300 and stream.rows_per_epoch == 256  # 2 batches of 128
    assert len({fragment.path for fragment in stream.source.fragments}) == 3  # one file held out
    from workers.augment import AugmentStage
    from orchestrator.pipeline import augment_stage_kwargs

    stage = AugmentStage(source=stream.source, **augment_stage_kwargs(config))
    piece = {name: np.asarray(values[:1]) for name, values in stream.pieces(0, 1, 1).to_pydict().items()}
    batch = next(iter(stage(piece)))
    assert set(batch) == {"clean", "aug1", "aug2", "label", "epoch", "row", "skipped"} and batch["aug1"].dtype == np.uint8
    assert batch["clean"].shape[1:] == (3, 32, 32) and (batch["row"] < 400).all()
    validation = data.validation.take_batch(100)
    assert set(validation) == {"clean", "label"} and validation["clean"].shape == (100, 3, 32, 32)
