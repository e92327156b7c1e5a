"""The one configuration model every job reads: YAML in, `--set a.b=c` overrides, validated once.

Every knob lives here and nowhere else: the CLI only chooses the file, the overrides and the
output URI (which is `storage.uri`). Errors come out as one line naming the key, the bad value
and what is allowed, so the CLI can print it and exit 2.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from augmix.errors import InputError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

CONFIG_DIR = Path(__file__).resolve().parents[1] / "jobs" / "configs"


class ConfigError(InputError):
    """A bad configuration value; the message is one line a user can act on."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where training and test images come from (see augmix.datasets)."""

    name: Literal["synthetic", "cifar10", "cifar100", "parquet", "folder", "webdataset"] = "synthetic"
    path: str | None = None  # folder, Parquet file/dir, tar shards (dir or {000..009} pattern), or s3:// URI
    test_path: str | None = None  # the test split (default: sibling test.parquet; folder/webdataset: sibling val/ or test/)
    image_column: str = "image"  # parquet
    label_column: str = "label"  # parquet
    image_key: str = "jpg;jpeg;png;webp"  # webdataset: the image member's extension (alternatives split by ;)
    label_key: str = "cls"  # webdataset: the label member's extension (the class index as text)
    limit: int = Field(0, ge=0)  # first N training examples, 0 = all
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    download: bool = False  # torchvision download when the local folder is missing (online only)
    image_size: int = Field(32, ge=8)
    synthetic_train_size: int = Field(20000, ge=10)
    synthetic_test_size: int = Field(2000, ge=10)
    # training crop: "pad" = RandomCrop(image_size, padding=crop_padding) (CIFAR), "random_resized" =
    # RandomResizedCrop(image_size, crop_scale, crop_ratio) (ImageNet: images of any size); then flip
    train_crop: Literal["pad", "random_resized"] = "pad"
    crop_padding: int = Field(4, ge=0)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random_resized: area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # random_resized: aspect ratio (w/h), log-uniform
    flip: bool = True
    # validation and test images of other sizes: shorter side resized to `resize` (0 = image_size), then
    # centre cropped to image_size (ImageNet: resize 256, image_size 224)
    resize: int = Field(0, ge=0)
    on_bad_image: Literal["fail", "skip"] = "fail"  # skip: train without rows whose image or label is unusable

    @model_validator(mode="after")
    def _source_needs_path(self) -> "DataConfig":
        if self.name in ("parquet", "folder", "webdataset") and not self.path:
            raise ValueError(f"data.path is required when data.name is {self.name!r} (a local path or s3:// URI)")
        return self

    @model_validator(mode="after")
    def _crop_ranges(self) -> "DataConfig":
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"data.crop_scale {list(self.crop_scale)} not allowed; need 0 < low <= high <= 1")
        low, high = self.crop_ratio
        if not 0.0 < low <= high:
            raise ValueError(f"data.crop_ratio {list(self.crop_ratio)} not allowed; need 0 < low <= high")
        if self.resize and self.resize < self.image_size:
            raise ValueError(f"data.resize {self.resize} is smaller than data.image_size {self.image_size}; "
                             "allowed: 0 (= image_size) or >= image_size")
        return self


class ModelConfig(_Section):
    """Which network; names are augmix.models.MODELS (wrn40_2, densenet_bc_100, resnet50, ...)."""

    name: str = "wrn40_2"
    options: dict[str, Any] = Field(default_factory=dict)  # constructor options, e.g. {dropout: 0.3, cifar_stem: true}

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from augmix.models import check_model_name

        return check_model_name(name)

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from augmix.models import check_model_options

        name = info.data.get("name")
        return check_model_options(name, options) if name else options


class AugMixConfig(_Section):
    """AugmentAndMix and the Jensen-Shannon consistency loss (paper defaults)."""

    enabled: bool = True  # False = standard training (crop + flip only): the baseline
    width: int = Field(3, ge=1)
    depth: int = -1
    severity: int = Field(3, ge=1, le=10)
    alpha: float = Field(1.0, gt=0.0)
    all_ops: bool = False
    jsd: bool = True  # False = one augmented view, CE only
    lam: float = Field(12.0, ge=0.0)
    placement: Literal["data", "trainer"] = "data"  # where AugMix runs: Ray Data CPU actors or the trainer's device

    @field_validator("depth")
    @classmethod
    def _depth(cls, depth: int) -> int:
        if depth == 0 or depth < -1:
            raise ValueError(f"depth {depth} not allowed; use -1 (uniform 1..3) or a positive chain length")
        return depth


class TrainConfig(_Section):
    """The reference CIFAR recipe: SGD Nesterov, lr 0.1 per 128 images, cosine per step."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)  # per train worker
    lr: float = Field(0.1, gt=0.0)  # for a global batch of 128; scaled linearly with the global batch
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0)
    amp: bool = False  # mixed precision (GPU only)
    channels_last: bool = True  # NHWC model and inputs (GPU only): 1.4-1.8x faster steps measured on an H200
    compile: bool = False  # torch.compile the model (GPU only); off until measured on a GPU
    seed: int = 0
    max_steps_per_epoch: int = Field(0, ge=0)  # 0 = the whole epoch; >0 caps it (smoke tests)
    max_failures: int = Field(1, ge=-1)  # worker-group restarts from the latest checkpoint
    threads_per_worker: int = Field(1, ge=1)
    validate_corrupted: bool = False  # also score validation under the 4 validation corruptions (sweep objective)


class ScalingSettings(_Section):
    """Ray resources for the trainers and the AugMix data actors."""

    num_workers: int = Field(1, ge=0)  # 0 = run the loop in the driver (tests)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    data_actors: int = Field(1, ge=1)  # AugMix actors of the run, shared out over the trainers (at least 1 each)
    cpus_per_data_actor: float = Field(1.0, gt=0.0)
    data_batch_size: int = Field(256, ge=1)  # images per AugMix call (an actor reads pieces of 4 such batches)
    trainer_resources: dict[str, float] = Field(default_factory=dict)  # e.g. {"trainer_node": 0.01}
    data_resources: dict[str, float] = Field(default_factory=dict)  # e.g. {"augment_node": 0.01}


class StorageConfig(_Section):
    """Where a run writes: a local path or s3://bucket/prefix. Credentials never live here."""

    uri: str = "./runs/quickstart"
    endpoint_url: str | None = None  # non-AWS S3 endpoint; else AWS_ENDPOINT_URL_S3 from the environment


class EvalConfig(_Section):
    """The corruption evaluation: which cells, where corrupted images come from, how to schedule."""

    limit: int = Field(0, ge=0)  # first N test examples, 0 = all
    corruptions: list[str] | None = None  # None = the 15 benchmark corruptions
    extra: bool = False  # also the 4 validation corruptions
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    preset: Literal["cifar", "imagenet"] = "cifar"
    source: Literal["generate", "materialized"] = "generate"
    corrupted_path: str | None = None  # a -C folder when source=materialized (or where `augmix corrupt` writes)
    # -C layout: "npy" = CIFAR-10-C (<corruption>.npy, labels.npy), "folder" = ImageNet-C
    # (<corruption>/<severity>/<class>/<image>.JPEG); "auto" reads whichever is there and writes
    # folder for folder/webdataset sources, npy otherwise
    corrupted_layout: Literal["auto", "npy", "folder"] = "auto"
    corrupted_jpeg_quality: int = Field(85, ge=1, le=100)  # `augmix corrupt` folder layout: JPEG quality
    batch_size: int = Field(500, ge=1)
    seed: int = 0
    baseline: Literal["none", "alexnet"] = "none"
    gpus_per_cell: float = Field(0.25, ge=0.0, le=1.0)
    cpus_per_cell: float = Field(1.0, gt=0.0)
    max_retries: int = Field(2, ge=0)
    # Which benchmarks: "c" (corruption error, -C) and/or "p" (perturbation stability, -P).
    suites: list[Literal["c", "p"]] = Field(default_factory=lambda: ["c"])
    perturbations: list[str] | None = None  # None = the 10 test perturbations of ImageNet-P
    perturbation_extra: bool = False  # also the 4 validation perturbations (never in mFR / mT5D)
    difficulties: list[int] = Field(default_factory=lambda: [1])  # noise levels of the noise sequences
    frames: int | None = Field(None, ge=2)  # frames per sequence; None = the reference's length
    perturbed_path: str | None = None  # a -P folder (<name>.npy [N,T,H,W,3]): read sequences instead of generating
    p_baseline: str | None = None  # JSON (e.g. an AlexNet run's results.json) with flip_probabilities / top5_distances

    @field_validator("perturbations")
    @classmethod
    def _known_perturbations(cls, names: list[str] | None) -> list[str] | None:
        from augmix.perturbations import PERTURBATIONS

        for name in names or ():
            if name not in PERTURBATIONS:
                raise ValueError(f"unknown perturbation {name!r}; allowed: {', '.join(PERTURBATIONS)}")
        return names

    @field_validator("difficulties")
    @classmethod
    def _difficulties(cls, difficulties: list[int]) -> list[int]:
        if not difficulties or any(d not in (1, 2, 3) for d in difficulties):
            raise ValueError(f"difficulties {difficulties} not allowed; each must be in 1..3")
        return sorted(set(difficulties))

    @field_validator("suites")
    @classmethod
    def _suites(cls, suites: list[str]) -> list[str]:
        if not suites:
            raise ValueError("suites is empty; allowed: [c], [p] or [c, p]")
        return [suite for suite in ("c", "p") if suite in suites]

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        from augmix.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS

        allowed = (*CORRUPTIONS, *EXTRA_CORRUPTIONS)
        for name in names:
            if name not in allowed:
                raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(allowed)}")
        return names

    @field_validator("severities")
    @classmethod
    def _severities(cls, severities: list[int]) -> list[int]:
        bad = [s for s in severities if s not in (1, 2, 3, 4, 5)]
        if bad or not severities:
            raise ValueError(f"severities {severities} not allowed; each must be in 1..5")
        return sorted(set(severities))

    @model_validator(mode="after")
    def _materialized_needs_path(self) -> "EvalConfig":
        if self.source == "materialized" and not self.corrupted_path:
            raise ValueError("eval.corrupted_path is required when eval.source is 'materialized'")
        return self


class SearchRange(_Section):
    """A numeric range for Tune: uniform or log-uniform between low and high."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"range low={self.low} must be < high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log range needs low > 0, got {self.low}")
        return self


class TuneConfig(_Section):
    """The Ray Tune search space (paper values inside it) and the ASHA scheduler."""

    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    lam: SearchRange | None = Field(default_factory=lambda: SearchRange(low=1.0, high=30.0, log=True))
    width: list[int] | None = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    alpha: SearchRange | None = Field(default_factory=lambda: SearchRange(low=0.1, high=1.0))
    depth: list[int] | None = Field(default_factory=lambda: [-1, 1, 2, 3])
    severity: list[int] | None = None
    asha: bool = True
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)
    seed: int = 0
    cpus_per_trial: float = Field(0.0, ge=0.0)

    @field_validator("lam")
    @classmethod
    def _lam(cls, lam: SearchRange | None) -> SearchRange | None:
        if lam is not None and lam.low < 0:
            raise ValueError(f"lam range low={lam.low} is negative; λ must be >= 0")
        return lam

    @field_validator("width")
    @classmethod
    def _width(cls, width: list[int] | None) -> list[int] | None:
        if width is not None and (not width or min(width) < 1):
            raise ValueError(f"width choices {width} not allowed; each mixture width k must be >= 1")
        return width

    @field_validator("depth")
    @classmethod
    def _depth(cls, depth: list[int] | None) -> list[int] | None:
        if depth is not None and any(d == 0 or d < -1 for d in depth):
            raise ValueError(f"depth choices {depth} not allowed; each must be -1 or >= 1")
        return depth

    @field_validator("severity")
    @classmethod
    def _severity(cls, severity: list[int] | None) -> list[int] | None:
        if severity is not None and any(not 1 <= s <= 10 for s in severity):
            raise ValueError(f"severity choices {severity} not allowed; each must be in 1..10")
        return severity


class Config(_Section):
    """A whole job: data → model → AugMix → training → evaluation (→ search)."""

    name: str = "augmix"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augmix: AugMixConfig = Field(default_factory=AugMixConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` → ("a.b", c) with c parsed as YAML, so numbers, booleans and lists keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _format_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown config key {where!r}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"config {where}{shown}: {message}"


def build_config(tree: dict[str, Any], overrides: list[str] = ()) -> Config:
    tree = copy.deepcopy(tree)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None


def _config_text(path: str) -> str:
    from augmix import storage

    if storage.is_remote(path):
        if not storage.exists(path):
            raise ConfigError(f"config file {path!r} not found")
        return storage.read_bytes(path).decode()
    file = Path(path)
    if not file.exists() and (CONFIG_DIR / file.name).exists():
        file = CONFIG_DIR / file.name
    if not file.exists():
        raise ConfigError(f"config file {path!r} not found")
    return file.read_text()


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (a path, an s3:// URI such as a sweep's best_config.yaml, or a name in
    jobs/configs/) and apply `a.b=c` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        text = _config_text(str(path))
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(tree).__name__}")
    return build_config(tree, overrides)
