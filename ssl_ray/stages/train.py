"""Stage: train the detector with Ray Train (TorchTrainer; DDP over `train.num_workers` ranks).

Input is contract Parquet on storage (training rows: labeled + pseudo + negatives; held-out
validation rows). Each rank materializes only its share of the training rows (`core.shards`:
a hash of the image id picks the rank) into a node-local YOLO tree whose images come from
the node's content-addressed cache (reused across rounds), so the data each node copies
shrinks as ranks are added (`stages.rank_data`). Every rank runs Ultralytics' own trainer
(`adapters.trainer.RayDetectionTrainer`), which shuffles the rank's share every epoch.

Checkpoints: after every epoch rank 0 reports `last.pt` (+ `best.pt`) with `ray.train.report`
to `<out>/<stage>/ray/` (local or S3); after a worker dies, Ray restarts the group
(`train.max_failures`) and training resumes from that checkpoint through Ultralytics' own
resume, so finished epochs are not repeated. Outputs: `<out>/<stage>/weights/best.pt`,
`<out>/<stage>/train_metrics.json` (precision, recall, mAP50, mAP50-95, per class) and the
unit's marker `<out>/<stage>/_COMMITTED.train`, written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ssl_ray.adapters.runtime import ensure_resources
from ssl_ray.config import Config
from ssl_ray.core.units import STEP_SETTINGS, Unit, pick
from ssl_ray.io.storage import Store, file_identity
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    name: str  # unique within a run: Ray Train's run name (resume key); names its cache folder (see work_dir)
    train: list[str]  # Parquet files of training rows, relative to the run directory
    val: list[str]  # Parquet files of held-out rows
    names: list[str]  # class names
    weights: str  # start: a .yaml (from scratch), a .pt, or the previous round's best.pt
    stage: str = field(default="")  # output folder under the run directory (default: train/<name>)
    labeled_copies: int = 1  # each labeled training image appears this many times (oversampling)
    unlabeled: list[str] = field(default_factory=list)  # online mode: Parquet of the pool's images (their boxes unused)
    class_conf: list[float] | None = None  # online mode: each class's reliable-pseudo-box threshold
    refiner: str | None = None  # online mode with train.refine_pseudo: the run's saved box refiner
    epochs: int | None = None  # train.epochs unless given
    patience: int | None = None  # train.patience unless given

    @property
    def folder(self) -> str:
        return self.stage or f"train/{self.name}"


def spec_unit(cfg: Config, spec: TrainSpec, step: str, also: tuple[str, ...] = ()) -> Unit:
    """A training (or evaluation) as a unit of work: its settings (the training ones and
    `also`), its data and its start."""
    also += ("refine.",) if spec.refiner else ()  # how the refiner is applied
    if spec.unlabeled and cfg.train.teacher_consistency:  # the teacher's views and agreement
        also += ("label.consistency_views", "label.consistency_iou", "select.min_agreement")
    return Unit(
        spec.folder,
        step,
        settings=pick(result_settings(cfg), STEP_SETTINGS["train"] + also),
        inputs={
            "train": spec.train,
            "val": spec.val,
            "names": spec.names,
            "labeled_copies": spec.labeled_copies,
            "epochs": spec.epochs,
            "patience": spec.patience,
            "weights": file_identity(spec.weights, cfg.storage),
            **({"unlabeled": spec.unlabeled, "class_conf": spec.class_conf} if spec.unlabeled else {}),
            **({"refiner": file_identity(spec.refiner, cfg.storage)} if spec.refiner else {}),
        },
    )


def train_detector(cfg: Config, out: Store, spec: TrainSpec, also: tuple[str, ...] = ()) -> dict:
    """Train (or, when already done, read back) and return the final metrics. `also`: more
    settings the result depends on (`spec_unit`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    unit = spec_unit(cfg, spec, "train", also)
    if (done := out.done(unit)) is not None:
        return done["result"]
    stage = out.child(spec.folder)
    ensure_resources(cfg, "train")
    resources = {"CPU": cfg.train.cpus_per_worker}
    from ssl_ray.adapters.ddp import local_ddp_config

    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "out": out, "spec": spec},
        torch_config=local_ddp_config(),  # the group listens only on loopback / the node's Ray address
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=stage.path("ray"),
            storage_filesystem=stage.fs,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        best = Path(folder) / "best.pt"
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        stage.write_bytes("weights/best.pt", best.read_bytes())
    stage.write_text("train_metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    out.commit(unit, metrics)
    return metrics


def _train_loop(config: dict) -> None:
    """One Ray Train worker: materialize data, run Ultralytics' trainer as this rank."""
    import ray.train

    from ssl_ray.adapters.runtime import prepare_ultralytics
    from ssl_ray.stages.rank_data import materialize

    cfg: Config = config["cfg"]
    out: Store = config["out"]
    spec: TrainSpec = config["spec"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    work = work_dir(cfg, out, "train", spec.name)
    data = work / "data" / f"rank{rank}"
    data_yaml = materialize(cfg, out, spec, data, rank, world)
    online = _online_settings(cfg, spec, data) if spec.unlabeled else None

    prepare_ultralytics(cfg.output.cache_dir, threads=max(1, int(cfg.train.cpus_per_worker)))
    from ssl_ray.adapters.teacher import resolve_weights
    from ssl_ray.adapters.trainer import make_trainer

    overrides = {
        "model": resolve_weights(spec.weights, cfg.output.cache_dir, cfg.storage),
        "data": str(data_yaml),
        "epochs": spec.epochs or cfg.train.epochs,
        "batch": cfg.train.batch * world,
        "imgsz": cfg.model.imgsz,
        "device": "cpu" if not cfg.train.use_gpu else str(ray.train.torch.get_device().index),
        "workers": cfg.train.dataloader_workers,
        "patience": spec.patience or cfg.train.patience,
        "seed": cfg.seed,
        "project": str(work),
        "name": "run",
        "exist_ok": True,
        "plots": False,
        "verbose": rank == 0,
        **cfg.train.extra,
    }
    best: dict = {}  # held-out metrics of the best epoch so far (rank 0)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted group: continue from the last reported epoch
        with checkpoint.as_directory() as folder:
            saved = json.loads((Path(folder) / "metrics.json").read_text())
            if saved["epoch"] >= saved["epochs"]:  # it failed after its last epoch: just finish
                _report_final(Path(folder) / "best.pt", saved, rank)
                return
            resume = work / "resume" / "last.pt"
            resume.parent.mkdir(parents=True, exist_ok=True)
            _copy_whole(Path(folder) / "last.pt", resume)
            if online is not None and (Path(folder) / "online.pt").exists():
                online["resume_state"] = str(resume.with_name("online.pt"))
                _copy_whole(Path(folder) / "online.pt", Path(online["resume_state"]))
            # The best epoch so far stays the best unless beaten: its weights where Ultralytics
            # keeps best.pt (this node may not have them) and its metrics.
            if (Path(folder) / "best.pt").exists():
                weights = work / "run" / "weights"
                weights.mkdir(parents=True, exist_ok=True)
                _copy_whole(Path(folder) / "best.pt", weights / "best.pt")
                best.update(saved)
        overrides["resume"] = str(resume)

    trainer = make_trainer(world, overrides, online)
    trainer.add_callback("on_fit_epoch_end", lambda t: _report_epoch(t, rank, spec.names, best, spec.name))
    trainer.train()
    _report_final(trainer.best if trainer.best.exists() else trainer.last, best, rank)


def _copy_whole(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that a reader never sees part of it: the ranks of a restarted
    group on one node copy the same checkpoint to the same path, and a plain copy truncates
    the file another rank is loading (seen as a "truncated" last.pt on resume)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def work_dir(cfg: Config, out: Store, kind: str, name: str) -> Path:
    """The node-local folder of one training or evaluation (its YOLO tree, its Ultralytics
    project): in the shared cache, but keyed by the run directory as well as the stage name,
    so that two runs sharing `output.cache_dir`, one after the other or side by side on one
    node, never train on each other's trees."""
    return Path(cfg.output.cache_dir).expanduser() / kind / f"{name}-{run_key(out)}"


def run_key(out: Store) -> str:
    """The run directory's key in `work_dir`'s folder names."""
    return hashlib.blake2b(out.uri.encode(), digest_size=8).hexdigest()


def _online_settings(cfg: Config, spec: TrainSpec, folder: Path) -> dict:
    """What the online mode's trainer needs (`adapters.trainer`): the unlabeled images on this
    node, the reliable threshold of each class and the `train.*` online settings."""
    paths = (folder / "unlabeled.txt").read_text().splitlines()
    if not paths:
        from ssl_ray.errors import SslRayError

        raise SslRayError(f"train {spec.name}: online mode has no unlabeled image (all of the pool is labeled?)")
    t = cfg.train
    return {
        "paths": paths,
        "high": spec.class_conf or [cfg.select.conf] * len(spec.names),
        "teacher_decay": t.teacher_decay,
        "unsup_weight": t.unsup_weight,
        "unsup_warmup_steps": t.unsup_warmup_steps,
        "soft_min_score": t.soft_min_score,
        "refiner": _local_refiner(cfg, spec.refiner, folder) if spec.refiner else None,
        "refine": cfg.refine,
        "views": cfg.label.consistency_views if t.teacher_consistency else [],
        "view_iou": cfg.label.consistency_iou,
        "min_agree": cfg.select.min_agreement,
    }


def _local_refiner(cfg: Config, uri: str, folder: Path) -> str:
    """The saved box refiner copied next to this rank's tree (the trainer loads it from there)."""
    where, _, name = uri.rpartition("/")
    path = folder / "refiner.pt"
    path.write_bytes(Store(where or ".", cfg.storage).read_bytes(name))
    return str(path)


def _report_epoch(trainer, rank: int, names: list[str], best: dict, name: str = "") -> None:
    """Every rank reports once per epoch (Ray Train needs matching calls); rank 0 attaches
    the epoch's checkpoint (saved by Ultralytics just before this callback) and the held-out
    metrics of the best epoch so far."""
    import ray.train

    trainer.write_audit()
    metrics = {"epoch": trainer.epoch + 1, **{k: float(v) for k, v in (trainer.metrics or {}).items()}}
    if rank != 0:
        ray.train.report(metrics)
        return
    if not best or trainer.fitness is not None and trainer.fitness >= best["fitness"]:
        best.clear()
        best.update(
            validation_metrics(trainer.validator.metrics, names),
            fitness=float(trainer.fitness or 0.0),
            best_epoch=trainer.epoch + 1,
        )
    best.update(epoch=trainer.epoch + 1, epochs=trainer.epochs)
    from ssl_ray.adapters.logs import progress

    loss = _mean_loss(getattr(trainer, "tloss", None))
    progress(
        f"train {name}: epoch {trainer.epoch + 1}/{trainer.epochs}, loss {loss:.3f}, held-out mAP50-95 "
        f"{metrics.get('metrics/mAP50-95(B)', float('nan')):.3f} (best {best.get('mAP50-95', 0.0):.3f})"
    )
    with tempfile.TemporaryDirectory() as folder:
        for src in (trainer.last, trainer.best, trainer.wdir / "online.pt"):
            if src.exists():
                shutil.copyfile(src, Path(folder) / src.name)
        (Path(folder) / "metrics.json").write_text(json.dumps(best))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _mean_loss(tloss) -> float:
    """The epoch's mean training loss, summed over its terms (Ultralytics keeps a dict of
    them, or a tensor in older versions); NaN before the first batch."""
    if tloss is None:
        return float("nan")
    values = tloss.values() if isinstance(tloss, dict) else [tloss.sum()]
    return float(sum(float(v) for v in values))


def _report_final(best_pt: Path, best: dict, rank: int) -> None:
    """The last report of every rank; rank 0 attaches best.pt and its held-out metrics."""
    import ray.train

    if rank != 0:
        ray.train.report({"final": 1})
        return
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(best_pt, Path(folder) / "best.pt")
        (Path(folder) / "metrics.json").write_text(json.dumps(best))
        scalars = {k: v for k, v in best.items() if isinstance(v, (int, float))}
        ray.train.report({"final": 1, **scalars}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def validation_metrics(det_metrics, names: list[str]) -> dict:
    """Ultralytics' DetMetrics -> plain numbers, overall and per class."""
    box = det_metrics.box
    per_class = {
        names[int(c)]: {
            "precision": float(box.p[i]),
            "recall": float(box.r[i]),
            "mAP50": float(box.ap50[i]),
            "mAP50-95": float(box.ap[i]),
        }
        for i, c in enumerate(det_metrics.ap_class_index)
    }
    return {
        "precision": float(box.mp),
        "recall": float(box.mr),
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
        "per_class": per_class,
    }
