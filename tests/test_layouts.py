"""The layouts ImageNet users have: ImageFolder trees and WebDataset shards (local and S3), read
for training (streamed pieces), validation and test; RandomResizedCrop and Resize + CenterCrop
against torchvision. Trees and shards are written here from the shared CIFAR-10 JPEGs, plus
larger images of mixed sizes."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from augmix.datasets import load_split
from augmix.datasets.folder import list_folder, read_folder, split_root
from augmix.datasets.webdataset import expand_braces, index_shard, read_samples, read_webdataset, shard_files, write_shards
from augmix.storage import locate
from workers.augment import AugmentStage, random_resized_crop, resized_crop, resized_crop_params
from workers.training_data import FolderRows, PIECE_COLUMNS, PieceReader, TarShard, TrainingStream, WebDatasetRows

torch.set_num_threads(1)
CLASSES = ("airplane", "automobile", "bird")
LARGE_SIZES = ((96, 64), (50, 120), (130, 130), (64, 96))  # (width, height) of the mixed-size images


def _cifar_rows(cifar10_dir: Path, split: str, per_class: int) -> list[tuple[int, bytes]]:
    table = pq.read_table(cifar10_dir / f"{split}.parquet", columns=["image", "label"]).slice(0, 600).to_pydict()
    rows, counts = [], {}
    for image, label in zip(table["image"], table["label"]):
        if label < len(CLASSES) and counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            rows.append((label, image))
    return rows


def _larger(image: bytes, size: tuple[int, int], fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(image)).convert("RGB").resize(size, Image.BICUBIC).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory, cifar10_dir) -> Path:
    """<root>/train/<class>/*.jpg (6 CIFAR JPEGs a class + 4 larger mixed-size images, one a PNG)
    and <root>/val/<class>/*.jpg (3 a class)."""
    root = tmp_path_factory.mktemp("tree")
    for split, per_class in (("train", 6), ("val", 3)):
        for index, (label, image) in enumerate(_cifar_rows(cifar10_dir, "train" if split == "train" else "test",
                                                           per_class)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img_{index:03d}.JPEG").write_bytes(image)
    for index, size in enumerate(LARGE_SIZES):
        label, image = _cifar_rows(cifar10_dir, "test", 10)[index * 3]
        fmt = "PNG" if index == 3 else "JPEG"
        (root / "train" / CLASSES[label] / f"large_{index}.{fmt.lower()}").write_bytes(_larger(image, size, fmt))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory, image_tree) -> Path:
    """The training tree as 3 WebDataset shards of 8 samples (the last 6), in a shuffled order."""
    listing = list_folder(image_tree / "train")
    order = np.random.default_rng(0).permutation(len(listing))
    folder = tmp_path_factory.mktemp("shards")
    write_shards(listing.take(order).read(), listing.labels[order], folder, 8)
    return folder


# --- ImageFolder --------------------------------------------------------------------------------------

def test_folder_listing_is_imagefolders_order_and_reads_the_files(image_tree):
    from torchvision.datasets import ImageFolder

    listing = list_folder(image_tree / "train")
    reference = ImageFolder(str(image_tree / "train"))
    assert listing.classes == reference.classes == list(CLASSES)
    assert [str(image_tree / "train" / p.decode()) for p in listing.paths] == [path for path, _ in reference.samples]
    assert listing.labels.tolist() == reference.targets
    table = read_folder(image_tree / "train")
    assert table.is_encoded and len(table) == 22
    assert table.images[0] == (image_tree / "train" / listing.paths[0].decode()).read_bytes()


def test_limit_takes_rows_round_robin_over_the_classes(image_tree):
    listing = list_folder(image_tree / "train")
    assert np.bincount(listing.head(6).labels).tolist() == [2, 2, 2]
    head = listing.head(7)
    assert (np.diff(head.labels) >= 0).all() and sorted(np.bincount(head.labels).tolist()) == [2, 2, 3]


def test_test_split_is_the_sibling_folder_labelled_with_the_training_classes(image_tree, tmp_path):
    assert split_root(image_tree, "train") == f"{image_tree}/train"
    assert split_root(image_tree / "train", "test") == f"{image_tree}/val"
    test = load_split("folder", "test", image_tree)
    assert test.classes == list(CLASSES) and len(test) == 9
    # a test split without some classes keeps the training labels
    partial = tmp_path / "partial"
    (partial / "val" / "bird").mkdir(parents=True)
    (partial / "val" / "bird" / "a.jpg").write_bytes((image_tree / "val" / "bird").glob("*.JPEG").__next__().read_bytes())
    table = load_split("folder", "test", image_tree / "train", test_path=str(partial / "val"))
    assert table.classes == list(CLASSES) and table.labels.tolist() == [2]


def _copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_bad_folder_layouts_are_one_line_naming_them(image_tree, tmp_path):
    bad = _copy_tree(image_tree, tmp_path / "bad")
    (bad / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"train/empty: class folder holds no images") as error:
        list_folder(bad / "train")
    assert "\n" not in str(error.value)
    (bad / "train" / "empty").rmdir()
    (bad / "train" / "stray.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"image file 'stray.jpg' at the class level"):
        list_folder(bad / "train")
    (bad / "train" / "stray.jpg").unlink()
    (bad / "val" / "cat").mkdir()
    (bad / "val" / "cat" / "x.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"val: class folder 'cat' is not a training class \(3 classes"):
        load_split("folder", "test", bad)
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        list_folder(tmp_path / "nowhere")
    lonely = tmp_path / "lonely" / "train"
    _copy_tree(image_tree / "train", lonely)
    with pytest.raises(FileNotFoundError, match="no test split for folder source .*set data.test_path"):
        load_split("folder", "test", lonely)


# --- WebDataset ---------------------------------------------------------------------------------------

def test_webdataset_shards_index_and_read_back_the_same_bytes(image_tree, shards):
    listing = list_folder(image_tree / "train")
    order = np.random.default_rng(0).permutation(len(listing))
    files = shard_files(shards)
    assert [Path(f.path).name for f in files] == [f"shard-00000{i}.tar" for i in range(3)]
    assert expand_braces(str(shards / "shard-{000000..000002}.tar")) == [f.path for f in files]
    indices = [index_shard(f) for f in files]
    assert [len(i) for i in indices] == [8, 8, 6]
    labels = np.concatenate([i.labels for i in indices])
    assert labels.tolist() == listing.labels[order].tolist()
    images = read_samples(files[1].filesystem, files[1].path, indices[1].offsets[[5, 0]], indices[1].sizes[[5, 0]])
    assert images == listing.take(order[[13, 8]]).read()
    table = read_webdataset(str(shards / "shard-{000000..000002}.tar"), limit=10)
    assert len(table) == 10 and table.images[9] == listing.take(order[[9]]).read()[0]
    assert table.classes == ["0", "1", "2"]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def test_a_tar_member_without_a_label_and_other_bad_shards_are_one_line(tmp_path):
    shard = _tar(tmp_path / "a.tar", {"x1.jpg": b"\xff\xd8\xff", "x1.cls": b"1", "x2.jpg": b"\xff\xd8\xff"})
    with pytest.raises(ValueError, match=r"a.tar: sample 'x2' has no label member '.cls' \(it has jpg\)"):
        index_shard(locate(shard))
    shard = _tar(tmp_path / "b.tar", {"y.txt": b"hi", "y.cls": b"1"})
    with pytest.raises(ValueError, match=r"b.tar: sample 'y' has no image member .*set data.image_key"):
        index_shard(locate(shard))
    shard = _tar(tmp_path / "c.tar", {"z.jpg": b"\xff\xd8\xff", "z.cls": b"dog"})
    with pytest.raises(ValueError, match=r"c.tar: sample 'z': label '.cls' holds 'dog', not a class index"):
        index_shard(locate(shard))
    (tmp_path / "d.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ValueError, match=r"d.tar: not a tar file"):
        index_shard(locate(tmp_path / "d.tar"))
    with pytest.raises(FileNotFoundError, match=r"no WebDataset shards \(.tar\) under"):
        shard_files(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)


# --- the training stream over folder and WebDataset sources (no Ray: arrays in place of ObjectRefs) ----

def _folder_rows(tree: Path) -> tuple[FolderRows, object]:
    listing = list_folder(tree)
    rows = FolderRows({"path": listing.paths, "label": listing.labels}, len(listing), listing.root.path,
                      listing.root.filesystem, listing.root.display)
    return rows, listing


def _webdataset_rows(shards: Path) -> WebDatasetRows:
    files = shard_files(shards)
    indices = [index_shard(f) for f in files]
    offsets = np.cumsum([0] + [len(i) for i in indices])
    table = {"offset": np.concatenate([i.offsets for i in indices]), "size": np.concatenate([i.sizes for i in indices]),
             "label": np.concatenate([i.labels for i in indices])}
    return WebDatasetRows(tuple(TarShard(f.path, len(i), int(o)) for f, i, o in zip(files, indices, offsets)), table,
                          files[0].filesystem)


def _read_epoch(stream: TrainingStream, rank: int, epoch: int):
    reader = PieceReader(stream.source, stream.seed)
    pieces = stream.pieces(rank, epoch, epoch).to_pydict()
    images, labels, rows = [], [], []
    for e, fragment, start, stop in zip(*(pieces[name] for name in PIECE_COLUMNS)):
        i, l, r, _, _ = reader.read(e, fragment, start, stop)
        images += list(i)
        labels += l.tolist()
        rows += r.tolist()
    return images, labels, rows


def test_folder_and_webdataset_sources_deal_every_row_once_per_epoch_in_a_new_order(image_tree, shards):
    folder, listing = _folder_rows(image_tree / "train")
    webdataset = _webdataset_rows(shards)
    order = np.random.default_rng(0).permutation(len(listing))
    for source in (folder, webdataset):
        stream = TrainingStream(source, seed=3, world=2, rows_per_epoch=10, piece_rows=4)
        epochs = []
        for epoch in (1, 2):
            seen = []
            for rank in range(2):
                images, labels, rows = _read_epoch(stream, rank, epoch)
                assert len(rows) == 10
                # the bytes and label read are those of the row named
                expected = listing.take(np.array(rows) if source is folder else order[rows])
                assert images == expected.read() and labels == expected.labels.tolist()
                seen += rows
            assert len(set(seen)) == 20
            epochs.append(seen)
        assert epochs[0] != epochs[1]


def test_augment_stage_random_resized_crops_mixed_size_files_to_the_output_size(image_tree):
    folder, _ = _folder_rows(image_tree / "train")
    stream = TrainingStream(folder, seed=0, world=1, rows_per_epoch=22, piece_rows=22)
    piece = {name: np.asarray(values) for name, values in stream.pieces(0, 1, 1).to_pydict().items()}
    stage = AugmentStage(source=folder, image_size=48, train_crop="random_resized", batch_rows=11, seed=0)
    out = list(stage(piece))
    assert [len(o["label"]) for o in out] == [11, 11]
    assert all(o[view].shape == (11, 3, 48, 48) and o[view].dtype == np.uint8
               for o in out for view in ("clean", "aug1", "aug2"))
    again = list(AugmentStage(source=folder, image_size=48, train_crop="random_resized", batch_rows=11, seed=0)(piece))
    np.testing.assert_array_equal(out[0]["clean"], again[0]["clean"])


# --- RandomResizedCrop and Resize + CenterCrop against torchvision ---------------------------------------

@pytest.mark.parametrize("height, width", [(375, 500), (32, 32), (60, 400)])
def test_random_resized_crop_parameters_follow_torchvisions_distribution(height, width):
    """Two-sample Kolmogorov-Smirnov tests of h, w, top and left against
    torchvision.transforms.RandomResizedCrop.get_params on the same image size (60x400 falls back
    to the central crop in a share of draws: that share must match too)."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    count = 4000
    torch.manual_seed(0)
    image = torch.zeros(1, height, width)
    reference = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(count)])
    generator = torch.Generator().manual_seed(1)
    ours = torch.stack(resized_crop_params(torch.full((count,), height), torch.full((count,), width), (0.08, 1.0),
                                           (3 / 4, 4 / 3), generator), dim=1).numpy()
    assert (ours[:, 2] <= height).all() and (ours[:, 3] <= width).all()
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    for column, name in enumerate(("top", "left", "h", "w")):
        result = ks_2samp(ours[:, column], reference[:, column])
        assert result.pvalue > 1e-3, (name, result)
    full = lambda p: np.mean((p[:, 2] == height) | (p[:, 3] == width))  # noqa: E731 - fallback or full-size draws
    assert abs(full(ours) - full(reference)) < 0.03


def test_a_sampler_with_uniform_aspect_ratios_would_fail_the_distribution_test():
    """The test above can fail: aspect ratios drawn uniformly instead of log-uniformly are caught."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.zeros(1, 375, 500)
    reference = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
    rng = np.random.default_rng(0)
    area = 375 * 500 * rng.uniform(0.08, 1.0, 40000)
    aspect = rng.uniform(3 / 4, 4 / 3, 40000)
    w, h = np.round(np.sqrt(area * aspect)), np.round(np.sqrt(area / aspect))
    fits = (w <= 500) & (h <= 375)
    assert ks_2samp(w[fits][:4000] / h[fits][:4000], reference[:, 3] / reference[:, 2]).pvalue < 1e-3


@pytest.mark.parametrize("height, width", [(32, 32), (90, 120)])  # the batched kernel; image by image
def test_resized_crop_matches_torchvision_resized_crop_with_antialias(cifar_images, height, width):
    import torchvision.transforms.v2.functional as F

    images = torch.nn.functional.interpolate(cifar_images[0][:8].float(), size=(height, width), mode="bicubic")
    images = images.round().clamp(0, 255).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    top, left, h, w = resized_crop_params(torch.full((8,), height), torch.full((8,), width), (0.08, 1.0),
                                          (3 / 4, 4 / 3), generator)
    flip = torch.arange(8) % 2 == 1
    for size in (24, 160):  # down- and upscaling
        ours = resized_crop(images, top, left, h, w, size, flip)
        for b in range(8):
            reference = F.resized_crop(images[b], int(top[b]), int(left[b]), int(h[b]), int(w[b]), [size, size],
                                       antialias=True)
            if flip[b]:
                reference = reference.flip(-1)
            difference = (ours[b].int() - reference.int()).abs()
            assert difference.max() <= 1 and difference.float().mean() < 0.3, (size, b)


def test_random_resized_crop_of_mixed_sizes_is_torchvisions_crop_of_each_image(image_tree):
    import torchvision.transforms.v2.functional as F

    from workers.augment import decode_list

    images = decode_list(read_folder(image_tree / "train").images)
    assert len({tuple(i.shape) for i in images}) == 5  # 32x32 and four larger sizes
    out = random_resized_crop(images, 40, (0.08, 1.0), (3 / 4, 4 / 3), True, torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(2)  # the same draws: boxes for the batch, then flips
    heights = torch.tensor([i.shape[1] for i in images])
    widths = torch.tensor([i.shape[2] for i in images])
    top, left, h, w = resized_crop_params(heights, widths, (0.08, 1.0), (3 / 4, 4 / 3), generator)
    flips = torch.rand(len(images), generator=generator) < 0.5
    assert 0 < int(flips.sum()) < len(images)
    for b, image in enumerate(images):
        reference = F.resized_crop(image, int(top[b]), int(left[b]), int(h[b]), int(w[b]), [40, 40], antialias=True)
        assert torch.equal(out[b], reference.flip(-1) if flips[b] else reference), b


def test_resize_and_centre_crop_equal_torchvisions_on_pil_images(image_tree):
    from PIL import Image
    from torchvision import transforms

    from augmix.datasets.table import decode_images

    paths = sorted((image_tree / "train").glob("*/large_*"))
    encoded = [p.read_bytes() for p in paths]
    ours = decode_images(encoded, size=56, resize=64)
    pipeline = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(56)])
    for index, data in enumerate(encoded):
        reference = np.asarray(pipeline(Image.open(io.BytesIO(data)).convert("RGB")))
        difference = np.abs(ours[index].astype(int) - reference.astype(int))
        assert difference.max() <= 1, paths[index].name  # JPEG decoders may differ by a level


def test_config_switches_and_their_one_line_errors():
    from orchestrator.config import ConfigError, build_config, load_config

    config = load_config("imagenet_resnet50.yaml")
    assert (config.data.name, config.data.train_crop, config.data.resize, config.data.image_size) == \
        ("folder", "random_resized", 256, 224)
    for tree, message in (
        ({"data": {"name": "folder"}}, "data.path is required when data.name is 'folder'"),
        ({"data": {"crop_scale": [0.5, 0.1]}}, "crop_scale"),
        ({"data": {"image_size": 224, "resize": 200}}, "data.resize 200 is smaller than data.image_size 224"),
        ({"data": {"train_crop": "center"}}, "data.train_crop"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_config(tree)


# --- S3: the same tree and shards behind the test S3 server --------------------------------------------

def _upload(bucket: str, local: Path, prefix: str) -> str:
    import boto3

    client = boto3.client("s3")
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local)}", Body=path.read_bytes())
    return f"s3://{bucket}/{prefix}"


def test_folder_and_webdataset_read_from_s3_as_from_disk(s3_bucket, image_tree, shards):
    tree = _upload(s3_bucket, image_tree, "imagenet")
    remote = list_folder(split_root(tree, "train"))
    local = list_folder(image_tree / "train")
    assert remote.classes == local.classes and remote.paths.tolist() == local.paths.tolist()
    assert remote.read(np.array([0, 21])) == local.read(np.array([0, 21]))
    test = load_split("folder", "test", tree)
    assert test.labels.tolist() == load_split("folder", "test", image_tree).labels.tolist()
    with pytest.raises(FileNotFoundError, match=f"image folder not found: s3://{s3_bucket}/nothing"):
        list_folder(f"s3://{s3_bucket}/nothing")
    uri = _upload(s3_bucket, shards, "wds")
    remote_files = shard_files(uri)
    assert len(remote_files) == 3
    remote_index, local_index = index_shard(remote_files[2]), index_shard(shard_files(shards)[2])
    assert remote_index.offsets.tolist() == local_index.offsets.tolist()
    assert read_samples(remote_files[2].filesystem, remote_files[2].path, remote_index.offsets[:3],
                        remote_index.sizes[:3]) == read_webdataset(shards / "shard-000002.tar", limit=3).images.tolist()


# --- through Ray: the folder source trained in the driver, WebDataset from S3 -------------------------

@pytest.mark.ray
@pytest.mark.timeout(240)
def test_folder_source_trains_through_the_ray_stream_and_its_test_split_evaluates(ray_cluster, image_tree, tmp_path):
    """num_workers=0 runs the loop in the driver: what is tested is the data path (listing once, the
    actors reading files and RandomResizedCropping mixed sizes, validation by Ray Data tasks)."""
    from orchestrator.config import build_config
    from orchestrator.evaluation import load_images
    from orchestrator.training import build_run_config, train

    config = build_config({
        "name": "folder_source", "data": {"name": "folder", "path": str(image_tree), "image_size": 32, "resize": 36,
                                          "train_crop": "random_resized", "validation_fraction": 0.25},
        "model": {"name": "wrn10_1"}, "augmix": {"jsd": False},
        "train": {"epochs": 2, "batch_size": 8, "max_steps_per_epoch": 2},
        "scaling": {"num_workers": 0, "data_actors": 1, "cpus_per_data_actor": 0.5, "data_batch_size": 8},
        "storage": {"uri": str(tmp_path / "run")},
    })
    result = train(config, run_config=build_run_config(config, controller_failure_limit=0))
    assert [m["epoch"] for m in result.metrics] == [1, 2] and all(m["steps"] == 2 for m in result.metrics)
    assert 0.0 <= result.final_val_error <= 1.0
    saved = torch.load(result.model_uri, weights_only=False)
    assert saved["num_classes"] == 3 and saved["classes"] == list(CLASSES)
    test = load_images(config)  # the sibling val/ folder, Resize 36 + CenterCrop 32
    assert tuple(test.images.shape) == (9, 3, 32, 32) and test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_webdataset_on_s3_is_indexed_on_the_cluster_and_streams_pieces_and_validation(ray_cluster, s3_bucket, shards):
    from orchestrator.config import build_config
    from orchestrator.pipeline import augment_stage_kwargs, build_datasets

    uri = _upload(s3_bucket, shards, "wds/train")
    config = build_config({"data": {"name": "webdataset", "path": uri, "validation_fraction": 0.3, "image_size": 32,
                                    "train_crop": "random_resized"},
                           "train": {"batch_size": 4},
                           "scaling": {"data_actors": 1, "cpus_per_data_actor": 0.5, "data_batch_size": 4}})
    data = build_datasets(config)
    assert data.train_size + data.validation_size == 22 and data.validation_size in (6, 8)  # one whole shard held out
    assert data.classes == ["0", "1", "2"]
    stage = AugmentStage(source=data.stream.source, **augment_stage_kwargs(config))
    pieces = data.stream.pieces(0, 1, 1).to_pydict()
    rows = []
    for i in range(len(pieces["epoch"])):
        for batch in stage({name: np.asarray(values[i:i + 1]) for name, values in pieces.items()}):
            assert batch["aug1"].shape[1:] == (3, 32, 32)
            rows += batch["row"].tolist()
    assert len(rows) == data.stream.rows_per_epoch and len(set(rows)) == len(rows)
    validation = data.validation.take_batch(data.validation_size)
    assert validation["clean"].shape == (data.validation_size, 3, 32, 32)


# --- `augmix corrupt` fanned out: the ImageNet-C folder layout and the CIFAR-10-C .npy layout ----------

@pytest.mark.ray
@pytest.mark.timeout(240)
def test_corrupt_writes_the_imagenet_c_layout_that_evaluation_reads_and_resumes_per_shard(
        ray_cluster, image_tree, tmp_path, capsys):
    from augmix.corruptions import corrupt
    from augmix.datasets import list_corruptions, read_corrupted
    from orchestrator.cli import main as cli_main
    from workers.evaluate import CellSettings, EvaluationCell, cell_images, chunk_seed

    out = tmp_path / "tree-c"
    arguments = ["corrupt", "--out", str(out), "--set", "data.name=folder", "--set", f"data.path={image_tree}",
                 "--set", "eval.corruptions=[contrast, gaussian_noise]", "--set", "eval.severities=[1, 5]",
                 "--set", "eval.cpus_per_cell=0.5", "--set", "data.resize=40"]
    assert cli_main(arguments) == 0
    assert "0 of 4 shards already done" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "contrast").iterdir()) == ["1", "5"]
    assert sorted(p.name for p in (out / "contrast" / "5").iterdir()) == list(CLASSES)
    assert len(list((out / "gaussian_noise" / "1" / "bird").glob("*.JPEG"))) == 3
    assert list_corruptions(out) == ["contrast", "gaussian_noise"]
    images, labels = read_corrupted(out, "contrast", 5)
    assert images.shape == (9, 32, 32, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the JPEGs hold what the evaluation generates on the fly for that cell, up to JPEG coding at quality 85
    from orchestrator.config import build_config
    from orchestrator.evaluation import load_images

    config = build_config({"data": {"name": "folder", "path": str(image_tree), "resize": 40}})
    clean = load_images(config)
    expected = corrupt(clean.images, "contrast", 5, preset="cifar",
                       generator=torch.Generator().manual_seed(chunk_seed(0, "contrast", 5, 0)))
    difference = np.abs(images.astype(int) - expected.permute(0, 2, 3, 1).numpy().astype(int))
    assert difference.mean() < 4
    settings = CellSettings(preset="cifar", seed=0, batch_size=4, cells_uri=str(tmp_path / "cells"),
                            corrupted_path=str(out), limit=6)
    chunks, cell_labels = cell_images(EvaluationCell("gaussian_noise", 1), clean.images, clean.labels, settings,
                                      torch.device("cpu"))
    assert torch.cat(list(chunks)).shape == (6, 3, 32, 32) and cell_labels.tolist() == [0, 0, 1, 1, 2, 2]
    # resumable per shard: a shard whose marker is gone (a task killed mid-write) is the only one redone
    (out / ".progress" / "contrast-1-000000.done").unlink()
    written = (out / "contrast" / "5" / "bird").stat().st_mtime_ns
    assert cli_main(arguments) == 0
    assert "3 of 4 shards already done" in capsys.readouterr().out
    assert (out / ".progress" / "contrast-1-000000.done").exists()
    assert (out / "contrast" / "5" / "bird").stat().st_mtime_ns == written


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_corrupt_npy_layout_is_assembled_from_shards_and_equals_the_on_the_fly_images(ray_cluster, tmp_path):
    from augmix.datasets import read_corrupted
    from orchestrator.config import build_config
    from orchestrator.evaluation import load_images
    from orchestrator.materialize import materialize_corrupted
    from workers.evaluate import corrupted_chunks

    config = build_config({"data": {"name": "synthetic", "synthetic_test_size": 1500},
                           "eval": {"corruptions": ["contrast"], "cpus_per_cell": 0.5}})
    out = tmp_path / "synthetic-c"
    materialize_corrupted(config, str(out))  # 1,500 images: two shards per severity
    assert sorted(p.name for p in out.iterdir()) == ["contrast.npy", "labels.npy"]
    clean = load_images(config)
    for severity in (1, 4):
        images, labels = read_corrupted(out, "contrast", severity)
        expected = torch.cat(list(corrupted_chunks(clean.images, "contrast", severity, "cifar", 0)))
        np.testing.assert_array_equal(images, expected.permute(0, 2, 3, 1).numpy())
        assert labels.tolist() == clean.labels.tolist()


# --- `augmix convert` -------------------------------------------------------------------------------------

def test_convert_writes_parquet_shards_with_class_names_that_the_parquet_source_reads(image_tree, shards, tmp_path,
                                                                                     capsys):
    from augmix.datasets import read_parquet
    from orchestrator.cli import main as cli_main

    out = tmp_path / "parquet"
    assert cli_main(["convert", str(image_tree / "train"), str(out / "train"), "--shard-mb", "0.02",
                     "--row-group", "5"]) == 0
    files = sorted((out / "train").glob("part-*.parquet"))
    assert len(files) >= 2 and pq.ParquetFile(files[0]).metadata.row_group(0).num_rows == 5
    table = read_parquet(out / "train")
    listing = list_folder(image_tree / "train")
    assert table.classes == list(CLASSES)
    by_path = dict(zip(pq.read_table(out / "train").column("path").to_pylist(), table.images))
    assert sorted(by_path) == sorted(p.decode() for p in listing.paths)
    assert by_path[listing.paths[3].decode()] == listing.read(np.array([3]))[0]  # bytes unchanged
    assert table.labels.tolist() != sorted(table.labels.tolist())  # written shuffled
    assert cli_main(["convert", str(image_tree / "val"), str(out / "test"), "--classes-from",
                     str(image_tree / "train")]) == 0
    assert load_split("parquet", "test", out).classes == list(CLASSES)
    assert cli_main(["convert", str(shards), str(tmp_path / "from-wds"), "--classes-from",
                     str(image_tree / "train")]) == 0
    converted = read_parquet(tmp_path / "from-wds")
    assert converted.classes == list(CLASSES) and len(converted) == 22
    assert converted.images.tolist() == read_webdataset(shards).images.tolist()  # shard order kept
    assert "wrote 22 images of 3 classes" in capsys.readouterr().out
    assert cli_main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "missing" in capsys.readouterr().err
