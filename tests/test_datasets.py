"""Dataset readers: synthetic set, CIFAR python folders, Parquet of encoded images, the -C layout."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from augmix.datasets import (
    SYNTHETIC_CLASSES,
    ImageTable,
    decode_images,
    generate_synthetic,
    list_corruptions,
    load_split,
    read_cifar,
    read_corrupted,
    read_parquet,
    train_validation_split,
    write_corrupted,
)
from augmix.datasets.cifar import write_cifar_batch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def synthetic_train() -> ImageTable:
    return load_split("synthetic", "train", limit=3000, seed=7)


def _jpeg(image: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="JPEG" if mode != "RGBA" else "PNG", quality=95)
    return buffer.getvalue()


def _random_images(count: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_prefix_stable_and_balanced(synthetic_train):
    again = load_split("synthetic", "train", limit=600, seed=7)
    assert np.array_equal(again.images, synthetic_train.images[:600])
    assert np.array_equal(again.labels, synthetic_train.labels[:600])
    other_seed = load_split("synthetic", "train", limit=250, seed=8)
    test_split = load_split("synthetic", "test", limit=250, seed=7)
    assert not np.array_equal(other_seed.images, synthetic_train.images[:250])
    assert not np.array_equal(test_split.images, synthetic_train.images[:250])
    # any row range can be generated alone (a shard), identical to the same rows of the whole
    middle, middle_labels = generate_synthetic(300, seed=7, start=1700)
    assert np.array_equal(middle, synthetic_train.images[1700:2000])
    assert np.array_equal(middle_labels, synthetic_train.labels[1700:2000])
    assert synthetic_train.images.shape == (3000, 32, 32, 3) and synthetic_train.images.dtype == np.uint8
    assert synthetic_train.classes == SYNTHETIC_CLASSES and len(SYNTHETIC_CLASSES) == 10
    assert np.bincount(synthetic_train.labels, minlength=10).tolist() == [300] * 10


def _texture_statistics(images: np.ndarray) -> dict[str, float]:
    """Spatial std per channel, mean |gradient| (edge energy) and the median |gradient| (zero for
    flat-colour regions, however many edges the image has)."""
    pixels = images.astype(np.float32)
    gradients = np.concatenate(
        [np.abs(np.diff(pixels, axis=1)).reshape(len(pixels), -1), np.abs(np.diff(pixels, axis=2)).reshape(len(pixels), -1)],
        axis=1,
    )
    return {
        "spatial_std": float(pixels.std(axis=(1, 2)).mean()),
        "edge_energy": float(gradients.mean()),
        "median_gradient": float(np.median(gradients, axis=1).mean()),
    }


def _flat_colour_set(count: int) -> np.ndarray:
    """The kind of set the synthetic data must not be: a flat disc on a flat background."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:32, :32]
    centre = rng.uniform(8, 24, (count, 2))
    inside = (x - centre[:, :1, None]) ** 2 + (y - centre[:, 1:, None]) ** 2 < 64
    colours = rng.integers(0, 256, (2, count, 1, 1, 3))
    return np.where(inside[..., None], colours[0], colours[1]).astype(np.uint8)


def test_synthetic_looks_natural_not_flat(synthetic_train):
    ours = _texture_statistics(synthetic_train.images)
    flat = _texture_statistics(_flat_colour_set(len(synthetic_train)))
    assert flat["median_gradient"] == 0
    assert ours["spatial_std"] > 30
    assert ours["edge_energy"] > max(8.0, 2.5 * flat["edge_energy"])  # gray levels per pixel step
    assert ours["median_gradient"] > 3, ours  # texture everywhere, not flat regions
    # backgrounds are textured: the border ring varies within each image
    images = synthetic_train.images.astype(np.float32)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert np.median(border.std(axis=1).mean(axis=1)) > 8
    assert 60 < images.mean() < 190


def test_synthetic_is_learnable_by_a_tiny_probe(synthetic_train):
    torch.manual_seed(0)
    images = torch.from_numpy(synthetic_train.images).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(synthetic_train.labels)
    train_x, train_y, test_x, test_y = images[:2000], labels[:2000], images[2000:], labels[2000:]
    probe = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, stride=2, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )
    optimiser = torch.optim.Adam(probe.parameters(), lr=3e-3)
    for _ in range(5):
        for batch in torch.randperm(2000).split(100):
            loss = torch.nn.functional.cross_entropy(probe(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (probe(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.25, f"probe accuracy {accuracy:.3f} (chance 0.1)"


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="validation"):
        generate_synthetic(10, split="validation")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_split("imagenet", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_split("synthetic", "val")


# ---------------------------------------------------------------- validation split


def test_train_validation_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(10), [100, 100, 100, 100, 100, 50, 50, 50, 200, 150])
    np.random.default_rng(0).shuffle(labels)
    train, validation = train_validation_split(len(labels), 0.1, seed=3, labels=labels)
    again = train_validation_split(len(labels), 0.1, seed=3, labels=labels)
    assert np.array_equal(train, again[0]) and np.array_equal(validation, again[1])
    assert np.intersect1d(train, validation).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, validation])), np.arange(len(labels)))
    expected = np.round(0.1 * np.bincount(labels)).astype(int)
    assert np.array_equal(np.bincount(labels[validation], minlength=10), expected)
    other = train_validation_split(len(labels), 0.1, seed=4, labels=labels)[1]
    assert not np.array_equal(other, validation)
    plain_train, plain_validation = train_validation_split(1000, 0.25, seed=0)
    assert len(plain_validation) == 250 and len(plain_train) == 750
    with pytest.raises(ValueError, match="fraction 1.0"):
        train_validation_split(10, 1.0, seed=0)


def test_load_split_validation_is_held_out_of_train():
    train = load_split("synthetic", "train", limit=1000, validation_fraction=0.2, seed=1)
    validation = load_split("synthetic", "validation", limit=1000, validation_fraction=0.2, seed=1)
    assert len(train) == 800 and len(validation) == 200
    assert np.bincount(validation.labels).tolist() == [20] * 10
    whole = load_split("synthetic", "train", limit=1000, seed=1).images.reshape(1000, -1)
    rows = {row.tobytes() for row in whole}
    assert all(row.tobytes() in rows for row in validation.images.reshape(200, -1))
    train_rows = {row.tobytes() for row in train.images.reshape(800, -1)}
    assert not any(row.tobytes() in train_rows for row in validation.images.reshape(200, -1))
    with pytest.raises(ValueError, match="validation_fraction"):
        load_split("synthetic", "validation", limit=100)


# ---------------------------------------------------------------- CIFAR python folders


def _write_cifar10_folder(root: Path, per_batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_images, all_labels = [], []
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images = _random_images(per_batch, seed=index)
        labels = np.arange(per_batch) % 10
        write_cifar_batch(folder / name, images, labels, "labels")
        all_images.append(images)
        all_labels.append(labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, handle, protocol=2)
    return np.concatenate(all_images), np.concatenate(all_labels)


def test_cifar10_python_folder(tmp_path):
    images, labels = _write_cifar10_folder(tmp_path)
    # the round trip through the pickle format is pixel exact: check one pixel in CHW order too
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    assert raw[b"data"][0, 1024 + 5] == images[0, 0, 5, 1]
    train = read_cifar("cifar10", "train", tmp_path)  # the parent (torchvision's root) works
    assert np.array_equal(train.images, images[:100]) and np.array_equal(train.labels, labels[:100])
    assert train.classes[0] == "airplane" and train.num_classes == 10
    test = load_split("cifar10", "test", tmp_path / "cifar-10-batches-py")  # the folder itself too
    assert np.array_equal(test.images, images[100:])
    limited = load_split("cifar10", "train", tmp_path, limit=30)
    assert np.array_equal(limited.images, images[:30])


def test_cifar100_python_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = _random_images(30, seed=5)
    fine = np.arange(30) * 3 % 100
    for name in ("train", "test"):
        data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(30, -1)
        batch = {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, handle)
    table = load_split("cifar100", "train", tmp_path)
    assert np.array_equal(table.images, images) and np.array_equal(table.labels, fine)
    assert table.num_classes == 100 and table.classes[99] == "c99"


def test_cifar_missing_or_bad_folder_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found at .*nowhere.*cifar-10-python.tar.gz"):
        read_cifar("cifar10", "train", tmp_path / "nowhere")
    _write_cifar10_folder(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_2: not a CIFAR python batch"):
        read_cifar("cifar10", "train", tmp_path)
    # a pickle that would run code is refused, not executed
    batch.write_bytes(pickle.dumps({b"data": len}))  # (print may be patched by Ray Data in this process)
    with pytest.raises(ValueError, match="refusing to load builtins.len"):
        read_cifar("cifar10", "train", tmp_path)
    write_cifar_batch(batch, _random_images(20), np.full(20, 10), "labels")
    with pytest.raises(ValueError, match=r"data_batch_2: row 0: label 10 out of range, allowed 0..9"):
        read_cifar("cifar10", "train", tmp_path)


# ---------------------------------------------------------------- Parquet


def test_parquet_shared_cifar10(cifar10_dir):
    table = load_split("parquet", "test", cifar10_dir, limit=300, decode=True)
    assert table.images.shape == (300, 32, 32, 3) and table.images.dtype == np.uint8
    assert table.classes[:3] == ["airplane", "automobile", "bird"]
    reference = pq.read_table(cifar10_dir / "test.parquet", columns=["image", "label"]).slice(0, 300)
    assert table.labels.tolist() == reference.column("label").to_pylist()
    first = np.asarray(Image.open(io.BytesIO(reference.column("image")[0].as_py())).convert("RGB"))
    assert np.array_equal(table.images[0], first)  # same libjpeg-turbo decode as PIL
    encoded = load_split("parquet", "train", cifar10_dir, limit=50)
    assert encoded.is_encoded and encoded.decoded().shape == (50, 32, 32, 3)


def test_parquet_custom_columns_directory_and_metadata(tmp_path):
    images = generate_synthetic(12, seed=1)[0]  # natural-looking: JPEG keeps them close
    encoded = [_jpeg(image) for image in images[:11]] + [_jpeg(images[11], "RGBA")]
    encoded[10] = _jpeg(images[10], "L")
    labels = np.arange(12) % 4
    (tmp_path / "train").mkdir()
    schema_metadata = {b"classes": b'["w", "x", "y", "z"]'}
    for part, rows in enumerate((slice(0, 5), slice(5, 12))):
        table = pa.table({"png_bytes": encoded[rows], "target": pa.array(labels[rows], pa.int16())})
        pq.write_table(table.replace_schema_metadata(schema_metadata), tmp_path / "train" / f"part-{part}.parquet")
    table = load_split("parquet", "train", tmp_path, image_column="png_bytes", label_column="target")
    assert table.classes == ["w", "x", "y", "z"] and table.labels.tolist() == labels.tolist()
    decoded = table.decoded()
    assert decoded.shape == (12, 32, 32, 3)
    assert np.abs(decoded[:10].astype(int) - images[:10]).mean() < 8  # JPEG q95; random pairs: ~85
    assert (decoded[10, ..., 0] == decoded[10, ..., 2]).all()  # grayscale → RGB
    assert np.array_equal(decoded[11], images[11])  # RGBA PNG → RGB, lossless
    with pytest.raises(ValueError, match=r"no column 'image'.*png_bytes, target"):
        read_parquet(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        load_split("parquet", "test", tmp_path)
    # a file named for its split finds its sibling; a lone file or directory is the training data
    assert load_split("parquet", "train", tmp_path / "train", image_column="png_bytes", label_column="target").labels.size == 12
    (tmp_path / "test").mkdir()
    pq.write_table(pa.table({"png_bytes": encoded[:3], "target": [3, 2, 1]}), tmp_path / "test" / "x.parquet")
    sibling = load_split("parquet", "test", tmp_path / "train", image_column="png_bytes", label_column="target")
    assert sibling.labels.tolist() == [3, 2, 1]
    # "{split}" in the path, a filesystem passed in, a split on a shard
    explicit = load_split(
        "parquet", "train", str(tmp_path / "{split}"), image_column="png_bytes", label_column="target",
        filesystem=pafs.LocalFileSystem(),
    )
    assert explicit.shard(1, 3).labels.tolist() == labels[4:8].tolist()


def test_parquet_corrupt_image_names_the_row(tmp_path):
    encoded = [_jpeg(image) for image in _random_images(6)]
    encoded[4] = encoded[4][: len(encoded[4]) // 3]  # truncated JPEG
    pq.write_table(pa.table({"image": encoded, "label": [0] * 6}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: row 4: cannot decode image"):
        read_parquet(tmp_path / "bad.parquet", decode=True)
    with pytest.raises(ValueError, match=r"row 4: cannot decode image"):
        read_parquet(tmp_path / "bad.parquet").decoded()
    with pytest.raises(ValueError, match=r"row 2: cannot decode image"):
        decode_images([encoded[0], encoded[1], b"GIF89a garbage"])


def test_decode_mixed_sizes_needs_a_size():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 15:25] = 200  # a centre stripe: Resize (x0.8) + CenterCrop keeps it, flanked by dark
    encoded = [_jpeg(_random_images(1)[0]), _jpeg(wide)]
    with pytest.raises(ValueError, match=r"row 1: image size 40x20 differs from row 0's 32x32"):
        decode_images(encoded, source="mixed")
    decoded = decode_images(encoded, source="mixed", size=16)
    assert decoded.shape == (2, 16, 16, 3)
    assert decoded[1, :, 4:12].mean() > 190 and decoded[1, :, :2].mean() < 20


def test_parquet_label_out_of_range_and_missing_source(tmp_path):
    encoded = [_jpeg(image) for image in _random_images(5)]
    table = pa.table({"image": encoded, "label": [0, 1, 2, 7, 1]})
    pq.write_table(table.replace_schema_metadata({"classes": "a,b,c"}), tmp_path / "labels.parquet")
    with pytest.raises(ValueError, match=r"labels.parquet: row 3: label 7 out of range, allowed 0..2"):
        read_parquet(tmp_path / "labels.parquet")
    pq.write_table(pa.table({"image": encoded, "label": [0, -1, 2, 0, 1]}), tmp_path / "negative.parquet")
    with pytest.raises(ValueError, match=r"row 1: label -1"):
        read_parquet(tmp_path / "negative.parquet")
    with pytest.raises(FileNotFoundError, match="Parquet source not found: .*absent.parquet"):
        read_parquet(tmp_path / "absent.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet file"):
        read_parquet(tmp_path / "junk.parquet")


def test_image_table_arrow_and_shards():
    table = ImageTable(_random_images(10), np.arange(10) % 3, ["a", "b", "c"], "memory")
    arrow = table.to_arrow()
    assert arrow.schema.metadata[b"classes"] == b"a,b,c"
    assert np.array_equal(arrow.column("image").combine_chunks().to_numpy_ndarray(), table.images)
    shards = [table.shard(i, 3) for i in range(3)]
    assert [len(s) for s in shards] == [3, 4, 3]
    assert np.array_equal(np.concatenate([s.labels for s in shards]), table.labels)
    with pytest.raises(ValueError, match="label 3 out of range"):
        ImageTable(_random_images(2), np.array([0, 3]), ["a", "b", "c"], "memory")


# ---------------------------------------------------------------- CIFAR-10-C layout


def test_corrupted_round_trip_memory_map_and_ranged_reads(tmp_path):
    labels = np.arange(8) % 10
    by_severity = [_random_images(8, seed=s) for s in range(5)]
    write_corrupted(tmp_path, "gaussian_noise", by_severity, labels)
    write_corrupted(tmp_path, "contrast", np.stack(by_severity[::-1]), labels)
    assert list_corruptions(tmp_path) == ["contrast", "gaussian_noise"]
    stacked = np.load(tmp_path / "gaussian_noise.npy")
    assert stacked.shape == (40, 32, 32, 3) and np.load(tmp_path / "labels.npy").shape == (40,)
    assert not list(tmp_path.glob("*.partial"))
    for severity in (1, 3, 5):
        images, read_labels = read_corrupted(tmp_path, "gaussian_noise", severity)
        assert np.array_equal(images, by_severity[severity - 1]) and np.array_equal(read_labels, labels)
        # the object-store path: header parsed, one ranged read of that severity's rows
        ranged, ranged_labels = read_corrupted(
            tmp_path, "gaussian_noise", severity, filesystem=pafs.LocalFileSystem(), limit=5
        )
        assert np.array_equal(ranged, by_severity[severity - 1][:5])
        assert ranged_labels.dtype == np.int64 and np.array_equal(ranged_labels, labels[:5])
    uri_images, _ = read_corrupted(f"file://{tmp_path}", "contrast", 2)
    assert np.array_equal(uri_images, by_severity[3])


def test_corrupted_reads_released_layout_and_rejects_bad_input(tmp_path):
    # the released files: uint8 labels, an older .npy written by np.save
    np.save(tmp_path / "fog.npy", np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3))
    np.save(tmp_path / "labels.npy", np.tile(np.array([3, 9], np.uint8), 5))
    images, labels = read_corrupted(tmp_path, "fog", 4, filesystem=pafs.LocalFileSystem())
    assert images.shape == (2, 4, 4, 3) and images[0, 0, 0, 0] == 6 * 48 % 256 and labels.tolist() == [3, 9]
    with pytest.raises(ValueError, match="severity 6 out of range; allowed: 1, 2, 3, 4, 5"):
        read_corrupted(tmp_path, "fog", 6)
    with pytest.raises(FileNotFoundError, match=r"snow.npy not found; corruptions there: fog"):
        read_corrupted(tmp_path, "snow", 1)
    with pytest.raises(ValueError, match="different labels"):
        write_corrupted(tmp_path, "frost", [np.zeros((2, 4, 4, 3), np.uint8)] * 5, np.array([3, 8]))
    with pytest.raises(ValueError, match="need images for 5 severities"):
        write_corrupted(tmp_path, "frost", [np.zeros((2, 4, 4, 3), np.uint8)] * 4, np.array([3, 9]))
    np.save(tmp_path / "odd.npy", np.zeros((7, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="7 rows is not 5 severities"):
        read_corrupted(tmp_path, "odd", 1)
