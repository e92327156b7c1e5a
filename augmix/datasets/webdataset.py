"""WebDataset shards: POSIX tar files whose consecutive members sharing a key form one sample
(`n01440764_10026.jpg` + `n01440764_10026.cls`), local or s3://.

The key of a member is its path up to the first dot of its file name, the extension everything
after it (WebDataset's convention). The image is the first member whose extension is one of the
image keys (`"jpg;jpeg;png;webp"`, WebDataset's `a;b` alternatives), the label the member with the
label key (`cls`: the class index as ASCII digits).

Tars carry no index, so a shard is scanned once (`index_shard`: member headers only on local
disks, one sequential pass on object stores) into a `ShardIndex`: byte offset, size and label of
every sample. Training actors then read only the samples of their piece (`read_samples`).
"""
from __future__ import annotations

import os
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from augmix.datasets.table import ImageTable
from augmix.errors import InputError, MissingInput
from augmix.storage import Location, locate

IMAGE_KEYS = "jpg;jpeg;png;webp"
LABEL_KEY = "cls"
SHARD_SUFFIXES = (".tar",)
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # key = path up to the first dot of the name
READ_THREADS = 16


@dataclass(frozen=True)
class ShardIndex:
    """Where every sample's image lies in one shard, and its label."""

    path: str  # inside the filesystem
    display: str
    offsets: np.ndarray  # int64 [n]: byte offset of the image member's data
    sizes: np.ndarray  # int64 [n]: its length
    labels: np.ndarray  # int64 [n]
    keys: np.ndarray  # bytes [n]: the sample keys

    def __len__(self) -> int:
        return len(self.labels)


def keys_of(spec: str) -> tuple[str, ...]:
    keys = tuple(key.strip().lower().lstrip(".") for key in spec.split(";") if key.strip())
    if not keys:
        raise InputError(f"image/label key {spec!r} is empty; use extensions such as 'jpg;png' or 'cls'")
    return keys


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: `train-{000000..000146}.tar` → the 147 names (zero padding kept)."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    low, high = match.group(1), match.group(2)
    width = len(low) if low.startswith("0") else 0
    names = []
    for number in range(int(low), int(high) + 1):
        names += expand_braces(pattern[:match.start()] + str(number).zfill(width) + pattern[match.end():])
    return names


def shard_files(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> list[Location]:
    """The shards at `path`: a brace pattern, one .tar file, or every .tar under a folder (sorted)."""
    text = os.fspath(path)
    if _BRACES.search(text):
        shards = [locate(name, filesystem) for name in expand_braces(text)]
        missing = [shard.display for shard in shards if not shard.is_file()]
        if missing:
            raise MissingInput(f"WebDataset shard not found: {missing[0]} ({len(missing)} of {len(shards)} "
                                    f"shards of {text} missing)")
        return shards
    return locate(text, filesystem).matching_files(SHARD_SUFFIXES, "WebDataset source", "WebDataset shards")


def samples(location: Location, image_keys: tuple[str, ...], label_key: str, with_images: bool):
    """(key, image member offset, size, label, image bytes or None) per sample, in shard order."""
    try:
        # local: random access (headers read, data skipped by seeking); object stores: one pass
        handle = location.open_input_file() if location.is_local else location.open_input_stream()
    except MissingInput:
        raise MissingInput(f"WebDataset shard not found: {location.display}") from None
    with handle:
        try:
            archive = tarfile.open(fileobj=handle, mode="r:" if location.is_local else "r|")
        except tarfile.TarError as error:
            raise InputError(f"{location.display}: not a tar file ({error})") from None
        current, members = None, {}
        try:
            for member in archive:
                if not member.isfile():
                    continue
                match = _MEMBER.match(member.name)
                if not match:
                    continue  # no extension: not part of any sample
                key, extension = match.group(1), match.group(2).lower()
                if key != current:
                    if current is not None:
                        yield _sample(location, current, members, image_keys, label_key)
                    current, members = key, {}
                wanted = extension == label_key or (with_images and extension in image_keys)
                data = archive.extractfile(member).read() if wanted else None
                members[extension] = (member.offset_data, member.size, data)
        except tarfile.TarError as error:
            raise InputError(f"{location.display}: damaged tar ({error})") from None
        if current is not None:
            yield _sample(location, current, members, image_keys, label_key)


def _sample(location: Location, key: str, members: dict, image_keys: tuple[str, ...], label_key: str):
    image = next((members[k] for k in image_keys if k in members), None)
    present = ", ".join(sorted(members))
    if image is None:
        raise InputError(f"{location.display}: sample '{key}' has no image member ({'/'.join(image_keys)}; it has "
                         f"{present}); set data.image_key to its image extension")
    if label_key not in members:
        raise InputError(f"{location.display}: sample '{key}' has no label member '.{label_key}' (it has {present}); "
                         "every sample needs one, or set data.label_key")
    text = members[label_key][2].decode("utf-8", "replace").strip()
    try:
        label = int(text)
    except ValueError:
        raise InputError(f"{location.display}: sample '{key}': label '.{label_key}' holds {text[:20]!r}, "
                         "not a class index") from None
    if label < 0:
        raise InputError(f"{location.display}: sample '{key}': label {label} is negative")
    return key, image[0], image[1], label, image[2]


def index_shard(location: Location, image_keys: str = IMAGE_KEYS, label_key: str = LABEL_KEY) -> ShardIndex:
    """Scan one shard: every sample's image offset and size, and its label."""
    rows = list(samples(location, keys_of(image_keys), keys_of(label_key)[0], with_images=False))
    if not rows:
        raise InputError(f"{location.display}: no samples")
    keys, offsets, sizes, labels, _ = zip(*rows)
    return ShardIndex(location.path, location.display, np.array(offsets, dtype=np.int64),
                      np.array(sizes, dtype=np.int64), np.array(labels, dtype=np.int64),
                      np.array([k.encode("utf-8") for k in keys], dtype=np.bytes_))


def read_samples(filesystem: pafs.FileSystem, path: str, offsets: np.ndarray, sizes: np.ndarray,
                 threads: int = READ_THREADS) -> list[bytes]:
    """The image bytes at (offset, size) pairs of one shard, in the order given: one read of the span
    they cover when it is not much more than they hold, else one ranged read each, concurrently."""
    if len(offsets) == 0:
        return []
    begin, end = int(offsets.min()), int((offsets + sizes).max())
    with filesystem.open_input_file(path) as handle:
        if end - begin <= 4 * int(sizes.sum()):
            span = handle.read_at(end - begin, begin)
            return [span[o - begin:o - begin + s] for o, s in zip(offsets.tolist(), sizes.tolist())]
        pairs = list(zip(offsets.tolist(), sizes.tolist()))
        with ThreadPoolExecutor(max_workers=min(threads, len(pairs))) as pool:
            return list(pool.map(lambda pair: handle.read_at(pair[1], pair[0]), pairs))


def read_webdataset(path: str | os.PathLike, *, limit: int = 0, image_keys: str = IMAGE_KEYS,
                    label_key: str = LABEL_KEY, classes: list[str] | None = None,
                    filesystem: pafs.FileSystem | None = None) -> ImageTable:
    """Every sample (the first `limit` in shard order when > 0) as an ImageTable of encoded bytes.
    Class names: `classes` when given, else "0".."max label"."""
    images, labels = [], []
    image_names, label_name = keys_of(image_keys), keys_of(label_key)[0]
    for location in shard_files(path, filesystem):
        for _, _, _, label, data in samples(location, image_names, label_name, with_images=True):
            if limit and len(labels) >= limit:
                break
            images.append(data)
            labels.append(label)
        if limit and len(labels) >= limit:
            break
    if not labels:
        raise InputError(f"{os.fspath(path)}: no samples")
    encoded = np.empty(len(images), dtype=object)
    encoded[:] = images
    label_array = np.array(labels, dtype=np.int64)
    names = list(classes) if classes is not None else [str(i) for i in range(int(label_array.max()) + 1)]
    return ImageTable(encoded, label_array, names, os.fspath(path))


def write_shards(images, labels, folder: str | os.PathLike, samples_per_shard: int, *, extension: str = "jpg",
                 prefix: str = "shard", filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Write encoded images and integer labels as WebDataset shards `<prefix>-000000.tar`, ... (keys
    `000000000`, ... in the given order; members `<key>.<extension>` and `<key>.cls`). Returns the
    shard paths as given."""
    import io
    import time

    directory = locate(folder, filesystem)
    directory.filesystem.create_dir(directory.path, recursive=True)
    written = []
    for number, start in enumerate(range(0, len(labels), samples_per_shard)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for row in range(start, min(start + samples_per_shard, len(labels))):
                for suffix, payload in ((extension, bytes(images[row])), ("cls", str(int(labels[row])).encode())):
                    member = tarfile.TarInfo(f"{row:09d}.{suffix}")
                    member.size, member.mtime = len(payload), int(time.time())
                    archive.addfile(member, io.BytesIO(payload))
        name = f"{prefix}-{number:06d}.tar"
        with directory.filesystem.open_output_stream(directory.join(name).path) as stream:
            stream.write(buffer.getvalue())
        written.append("/".join([os.fspath(folder).rstrip("/"), name]))
    return written
