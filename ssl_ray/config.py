"""The one typed configuration of ssl_ray. Defaults are for a real GPU cluster; `ssl_ray/configs/demo.yaml`
is the small CPU profile of the demo and tests. `load_config(path, overrides)`: overrides are `section.key=value`
strings (values parsed as YAML). No credentials here: S3 uses the AWS sources (environment, profile, role).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml

from ssl_ray.errors import ConfigError
from ssl_ray.typed import from_dict, setting, to_dict

_section = dataclasses.dataclass(kw_only=True, slots=True)


@_section
class StorageConfig:
    endpoint_url: str | None = setting(None, "S3-compatible endpoint, e.g. http://127.0.0.1:8333 (null = AWS)")
    region: str | None = setting(None, "S3 region (null = from the AWS environment/profile)")
    profile: str | None = setting(None, "AWS profile name from ~/.aws (null = default credential chain)")
    connect_timeout_s: float = setting(5.0, "timeout for connecting to S3, seconds", gt=0)
    retries: int = setting(5, "retries of a failed S3 request", ge=0)

    def __post_init__(self):
        if self.endpoint_url:
            url = urlparse(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"storage.endpoint_url: expected http(s)://host[:port], found {self.endpoint_url!r}")
            if url.username or url.password:
                raise ValueError(
                    "storage.endpoint_url: must not contain credentials; use the AWS environment or a profile"
                )


@_section
class LabeledConfig:
    data: str | None = setting(None, "Ultralytics data.yaml of the labeled set (local path or s3://)")
    on_error: Literal["fail", "skip"] = setting(
        "fail", "bad label lines/images: fail the run, or skip them and record why"
    )


@_section
class PoolConfig:
    sources: list[str] = setting([], "unlabeled pool: local directories or s3:// prefixes, images and videos")
    video_every_n: int = setting(30, "sample every Nth video frame", ge=1)
    video_fps: float | None = setting(None, "sample frames at this rate instead of every Nth", gt=0)
    video_keyframes: bool = setting(
        False,
        "sample a video's key frames only (the decoder skips every other frame without decoding it: the cheapest "
        "sparse sampling; video_every_n and video_fps are then ignored)",
    )
    video_chunk_samples: int = setting(
        64,
        "a video is split into chunks of this many sampled frames, each decoded by a task of its own "
        "(a long video spreads over tasks; memory per task is bounded by the chunk)",
        ge=1,
    )
    max_pixels: int = setting(64_000_000, "larger images are quarantined (decompression bombs)", ge=1)
    video_min_change: float | None = setting(
        None,
        "skip a sampled video frame unless some cell of its 16x16 grey thumbnail changed by more than this many "
        "grey levels (0-255) since the last kept frame of its video chunk; a skipped frame is recorded with reason "
        "near_duplicate and that frame's uri (null = keep every sampled frame)",
        ge=0,
        le=255,
    )
    max_reject_fraction: float = setting(
        0.05, "fail the stage when more of the pool is quarantined", ge=0, le=1, operational=True
    )


@_section
class ModelConfig:
    weights: str = setting("yolo26n.pt", "initial model: Ultralytics .pt checkpoint or .yaml (from scratch)")
    imgsz: int = setting(640, "inference and training image size, pixels", ge=32)


@_section
class TrainConfig:
    epochs: int = setting(100, "epochs per training run", ge=1)
    round0_epochs: int | None = setting(
        None,
        "epochs of round 0 (null = train.epochs): it trains on the labeled set alone, which usually needs more "
        "epochs than the rounds' larger sets",
        ge=1,
    )
    batch: int = setting(16, "images per worker per step", ge=1)
    num_workers: int = setting(1, "Ray Train workers (DDP ranks)", ge=1)
    use_gpu: bool = setting(True, "one GPU per worker", operational=True)
    cpus_per_worker: float = setting(8.0, "CPUs reserved per worker (data loading)", gt=0, operational=True)
    dataloader_workers: int = setting(8, "Ultralytics dataloader processes per worker", ge=0, operational=True)
    max_failures: int = setting(
        3, "worker failures tolerated before the run fails (-1 = unlimited)", ge=-1, operational=True
    )
    patience: int = setting(50, "Ultralytics early stopping: epochs without val improvement", ge=1)
    labeled_fraction: float | None = setting(
        0.4,
        "offline: oversample labeled images to about this share of each epoch of rounds 1.. (null = as they come)",
        gt=0,
        lt=1,
    )
    ssl: Literal["offline", "online"] = setting(
        "online",
        "rounds 1..: train with a mean teacher that labels an unlabeled batch every step (online), or on the "
        "round's pseudo-labeled dataset (offline; docs/training.md)",
    )
    teacher_decay: float = setting(0.98, "online: the teacher's EMA decay per optimizer step", gt=0, lt=1)
    unsup_weight: float = setting(1.0, "online: weight of the unlabeled batch's loss next to the labeled one's", ge=0)
    unsup_warmup_steps: int = setting(
        50, "online: optimizer steps over which the unlabeled loss's weight ramps up from 0 each round", ge=0
    )
    soft_min_score: float | None = setting(
        0.1,
        "online: teacher boxes scoring from this up to their class's threshold are soft classification "
        "targets without a box loss (null = below the threshold is background)",
        ge=0,
        le=1,
    )
    refine_pseudo: bool = setting(
        False,
        "online: the teacher's boxes scoring at least refine.min_score are moved by the run's box refiner "
        "(refine.enabled) before they become the student's targets, as the label stage moves them",
    )
    teacher_consistency: bool = setting(
        False,
        "online: the teacher also detects on label.consistency_views of each unlabeled image and fuses its "
        "boxes over them; a box fewer than select.min_agreement of the views found is uncertain, not reliable "
        "(as the label stage selects)",
    )
    extra: dict[str, Any] = setting({}, "further Ultralytics trainer arguments (lr0, mosaic, ...)")


@_section
class LabelConfig:
    batch_size: int = setting(64, "images per inference batch", ge=1, operational=True)
    num_gpus_per_actor: float = setting(1.0, "GPUs per inference actor (fractions share a GPU)", ge=0, operational=True)
    num_cpus_per_actor: float = setting(1.0, "CPUs per inference actor", ge=0, operational=True)
    min_actors: int = setting(1, "inference actors kept alive", ge=1, operational=True)
    max_actors: int = setting(8, "inference actors at most (autoscaling)", ge=1, operational=True)
    score_floor: float = setting(0.05, "detections below this score are not kept at all", ge=0, le=1)
    decode_tasks: int | None = setting(
        None, "concurrent decode tasks at most (null = as many as CPUs allow)", ge=1, operational=True
    )
    actor_calls: int = setting(
        2,
        "batches in flight inside each inference actor: while the model runs on one, "
        "the next is gathered and the last one's rows returned (the model runs one at a time)",
        ge=1,
        operational=True,
    )
    finalize_rows: int = setting(
        100_000,
        "pool items per finalize task: the last step (dedupe, select, write) runs "
        "in parallel over hash buckets of about this many items",
        ge=1,
        operational=True,
    )
    canvas: Literal["square", "rect"] = setting(
        "rect",
        "the teacher's canvas: the smallest rectangle with the long side model.imgsz and padding a "
        "multiple of 32 (as Ultralytics' predict: 1280x720 is 640x384 at 640), or a model.imgsz square",
    )
    decode: Literal["cpu", "gpu", "auto"] = setting(
        "cpu",
        "where JPEGs are decoded: cpu (decode tasks, reduced DCT scale for large photos), gpu (the "
        "inference actor, batched nvJPEG on its GPU, letterbox on the GPU; encoded bytes cross the object "
        "store), auto (gpu when label.num_gpus_per_actor > 0); other formats and video frames always on CPU",
        operational=True,
    )
    consistency_views: list[str] = setting(
        ["flip"], "test-time views a pseudo-box must agree with: 'flip', 'scale:S' (empty = off)"
    )
    consistency_iou: float = setting(0.5, "IoU a view's box needs (mapped back) to agree with a box", gt=0, le=1)

    def __post_init__(self):
        if self.min_actors > self.max_actors:
            raise ValueError(f"label.min_actors ({self.min_actors}) must be <= label.max_actors ({self.max_actors})")
        from ssl_ray.core.consistency import parse_views

        try:
            parse_views(self.consistency_views, 640)
        except ValueError as e:
            raise ValueError(f"label.consistency_views: {e}") from None

    @property
    def device_decode(self) -> bool:
        """Whether the inference actors decode JPEGs (`decode: gpu`, or `auto` with GPUs)."""
        return self.decode == "gpu" or (self.decode == "auto" and self.num_gpus_per_actor > 0)


@_section
class SelectConfig:
    conf: float = setting(0.85, "a box is a pseudo-label at or above this score", gt=0, le=1)
    per_class: dict[str, float] = setting({}, "per-class thresholds by class name or id; override conf")
    min_box_px: float = setting(4.0, "drop pseudo-boxes smaller than this (either side, pixels)", ge=0)
    max_boxes: int = setting(100, "at most this many pseudo-boxes per image (highest scores)", ge=1)
    negative_max_score: float = setting(0.1, "an image whose best score is below this is a negative", ge=0, le=1)
    max_negative_fraction: float = setting(0.2, "negatives at most this fraction of the selection", ge=0, le=1)
    review_max: int = setting(1000, "most uncertain images exported for human review", ge=0)
    min_agreement: float = setting(
        1.0, "with label.consistency_views: share of the views that must agree with a pseudo-box", ge=0, le=1
    )
    max_images_per_class: int | None = setting(
        None,
        "class balance: pseudo-labeled images trained on per class "
        "(of an image's best box), highest scores first (null = all)",
        ge=1,
    )
    adaptive: Literal["global", "val_precision"] = setting(
        "val_precision",
        "thresholds: the global one (and per_class), or per class each round: the lowest score "
        "reaching select.target_precision on the held-out val set (never below adaptive_floor, "
        "the round's global threshold where none reaches it)",
    )
    target_precision: float = setting(
        0.8, "adaptive=val_precision: precision each class's threshold must reach", gt=0, le=1
    )
    adaptive_floor: float = setting(0.1, "adaptive thresholds never go below this score", ge=0, le=1)

    def __post_init__(self):
        for key, value in self.per_class.items():
            if not 0 < value <= 1:
                raise ValueError(f"select.per_class.{key}: {value!r} is out of range, allowed: > 0 and <= 1")
        if self.negative_max_score >= self.conf:
            raise ValueError(
                f"select.negative_max_score ({self.negative_max_score}) must be below select.conf ({self.conf})"
            )


@_section
class RefineConfig:
    enabled: bool = setting(
        True,
        "train a box refiner on the labeled set before round 1 and move every teacher box "
        "scoring at least min_score with it, before selection (docs/labeling.md)",
    )
    min_score: float = setting(0.1, "boxes scoring below this are left as the teacher gave them", ge=0, le=1)
    blend: float = setting(0.5, "the box kept: blend x the refined box + (1 - blend) x the teacher's", ge=0, le=1)
    passes: int = setting(2, "refiner passes per box, each from the last pass's box", ge=1)
    steps: int = setting(3000, "training steps (batches of jittered labeled boxes)", ge=1)
    batch: int = setting(64, "boxes per training step", ge=1)
    crop: int = setting(32, "crop side the refiner sees, pixels", ge=8)
    context: float = setting(1.6, "crop side / box side", ge=1)
    max_images: int = setting(2000, "labeled images it trains on at most (held in memory at model.imgsz)", ge=1)
    num_cpus: float = setting(
        1.0,
        "CPUs of its training task (it trains on CPU; the inference actors apply it on their own device)",
        gt=0,
        operational=True,
    )


@_section
class RoundsConfig:
    max_rounds: int = setting(
        1,
        "rounds after round 0; online: one round with the whole budget (measured best), offline: 3 "
        "(raising it extends a finished run)",
        ge=0,
        operational=True,
    )
    conf_schedule: list[float] = setting([], "confidence threshold per round 1..N (empty = select.conf)")
    patience: int = setting(
        1, "stop after this many rounds without held-out mAP50-95 improvement", ge=1, operational=True
    )
    round0: Literal["train", "evaluate"] = setting(
        "train", "round 0 trains on the labeled set, or only evaluates model.weights"
    )
    control: float = setting(
        0.0,
        "also train a labeled-only control from round 0's weights, one segment per round with this multiple of "
        "the round's training steps, and report every round against it (0 = off; 1 = as long as the rounds)",
        ge=0,
        le=10,
    )

    def __post_init__(self):
        for i, value in enumerate(self.conf_schedule):
            if not 0 < value <= 1:
                raise ValueError(f"rounds.conf_schedule[{i}]: {value!r} is out of range, allowed: > 0 and <= 1")


@_section
class OutputConfig:
    dir: str = setting("runs/ssl", "run directory: local path or s3://bucket/prefix")
    cache_dir: str = setting("~/.cache/ssl_ray", "node-local cache: images, YOLO trees, Ultralytics settings")


@_section
class RayConfig:
    address: str | None = setting(None, "cluster to join ('auto', ray://...); null = RAY_ADDRESS or a local cluster")
    num_cpus: int | None = setting(None, "logical CPUs of a local cluster (null = twice the cores, at least 4)", ge=1)
    num_workers_soft_limit: int | None = setting(
        None,
        "worker processes a local cluster keeps: idle ones beyond are stopped (null = the cores; "
        "Ray's own default is its logical CPUs)",
        ge=1,
    )
    object_store_memory_gb: float | None = setting(
        None, "object store of a local cluster, GiB (null = Ray's default)", gt=0
    )
    data_object_store_gb: float | None = setting(
        None,
        "object store memory Ray Data may use while labeling, GiB (null = 16 x the images the "
        "inference actors hold in flight, see docs/labeling.md)",
        gt=0,
    )
    resource_wait_s: float = setting(1800.0, "how long a stage waits for autoscaled nodes (CPUs, GPUs) it needs", ge=0)


@_section
class Config:
    seed: int = setting(0, "seed for everything random", ge=0)
    storage: StorageConfig = setting(StorageConfig(), "", operational=True)
    labeled: LabeledConfig = setting(LabeledConfig(), "")
    pool: PoolConfig = setting(PoolConfig(), "")
    model: ModelConfig = setting(ModelConfig(), "")
    train: TrainConfig = setting(TrainConfig(), "")
    label: LabelConfig = setting(LabelConfig(), "")
    select: SelectConfig = setting(SelectConfig(), "")
    refine: RefineConfig = setting(RefineConfig(), "")
    rounds: RoundsConfig = setting(RoundsConfig(), "")
    output: OutputConfig = setting(OutputConfig(), "", operational=True)
    ray: RayConfig = setting(RayConfig(), "", operational=True)

    def __post_init__(self):
        if self.train.refine_pseudo and not self.refine.enabled:
            raise ValueError("train.refine_pseudo needs the box refiner: set refine.enabled: true")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML `path` (or start from defaults), apply `key.sub=value` overrides, validate."""
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_where(e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        apply_override(data, item)
    return from_dict(Config, data)


def apply_override(data: dict, item: str) -> None:
    """Set `a.b.c=value` in the nested dict `data` (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def dump_config(cfg: Config) -> str:
    """The effective config as YAML (what `config show` prints and each run saves)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else str(e)


def with_absolute_paths(cfg: Config) -> Config:
    """Relative local paths mean the caller's working directory, not a Ray worker's: resolve
    them before a config travels to tasks. `s3://` and `~` paths are left as they are (`~` is
    each node's own home); so are weights that name no file here (`yolo26n.yaml`, which
    Ultralytics resolves itself)."""

    def absolute(path: str) -> str:
        return path if path.startswith(("s3://", "~")) else os.path.abspath(path)

    labeled = dataclasses.replace(cfg.labeled, data=cfg.labeled.data and absolute(cfg.labeled.data))
    pool = dataclasses.replace(cfg.pool, sources=[absolute(s) for s in cfg.pool.sources])
    output = dataclasses.replace(cfg.output, dir=absolute(cfg.output.dir), cache_dir=absolute(cfg.output.cache_dir))
    model = dataclasses.replace(cfg.model, weights=absolute_weights(cfg.model.weights))
    return dataclasses.replace(cfg, labeled=labeled, pool=pool, output=output, model=model)


def absolute_weights(weights: str) -> str:
    """A relative path to a local weights file, made absolute; anything else as it is."""
    if weights.startswith(("s3://", "~")) or os.path.isabs(weights) or not os.path.isfile(weights):
        return weights
    return os.path.abspath(weights)
