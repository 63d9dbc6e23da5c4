"""The rounds driver: resumable multi-round pseudo-labeling over the stages.

    round 0   train on the labeled set (rounds/r000)
    round r   label the pool with round r-1's best.pt at round r's threshold (boxes moved by
              the box refiner, trained once on the labeled set, with refine.enabled)
              -> merge labeled + selected rows (rounds/rNNN/merged.parquet)
              -> train, warm-started from round r-1's weights (or a new student from
                 rounds.student_init) -> held-out metrics
    final     the best round's weights and dataset (final/), report (report/)

Each round ends with `rounds/rNNN/metrics.json` and `_COMMITTED`, written last; a committed
round is read back, never redone or rewritten. Inside a round, the label and train stages
keep their own markers, so a crash resumes at the first unfinished stage.

The driver does no heavy work itself: ingest (decoding every labeled image), merging, the
final export and the report run as Ray tasks; labeling is Ray Data, training Ray Train. With
a local run directory those tasks are pinned to the driver's node (the only node that sees
its files); with S3 they go wherever Ray places them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ssl_ray import rounds as plan
from ssl_ray.config import Config, dump_config, with_absolute_paths
from ssl_ray.errors import ConfigError
from ssl_ray.export import export_yolo_tree, parquet_num_rows, read_parquet_rows, write_parquet
from ssl_ray.ingest import ingest_labeled
from ssl_ray.calibrate import val_class_thresholds
from ssl_ray.label import LABELED_MARKER, label_pool
from ssl_ray.refine_stage import REFINER, fit_refiner
from ssl_ray.runtime import LazyRemote, ray_get
from ssl_ray.storage import Store
from ssl_ray.train import TrainSpec, evaluate_detector, train_detector
from ssl_ray.typed import from_dict, to_dict

log = logging.getLogger(__name__)


@dataclass
class RunState:
    names: list[str]
    rounds: list[dict] = field(default_factory=list)  # metrics.json of each finished round

    @property
    def scores(self) -> list[float]:
        return [r["held_out"]["mAP50-95"] for r in self.rounds]


def run_rounds(cfg: Config, *, new_run: bool = False, on_round: Callable[[RunState], None] | None = None) -> RunState:
    out = Store(cfg.output.dir, cfg.storage)
    fresh = claim_run_dir(out, cfg, new_run)  # the config as the user wrote it
    cfg = with_absolute_paths(cfg)  # as Ray tasks on other processes must see it
    try:
        names, n_labeled = _on_ray(out, _ingest, cfg)
    except Exception:
        if fresh:  # bad labeled data: leave no half-started run behind
            out.delete_prefix()
        raise
    state = RunState(names=names)
    for r in range(cfg.rounds.max_rounds + 1):
        if r > 0 and plan.should_stop(state.scores, cfg.rounds.patience):
            log.info("held-out mAP50-95 did not improve for %d round(s): stopping", cfg.rounds.patience)
            break
        state.rounds.append(_run_round(cfg, out, r, state, n_labeled))
        if on_round:
            on_round(state)
    _on_ray(out, _finalize, cfg, state.names, state.rounds, plan.best_round(state.scores))
    return state


def _on_ray(out: Store, task: LazyRemote, *args, **options):
    """Run a driver-side step as a Ray task (with Ray `options`, e.g. num_cpus) and wait for
    it; on the driver's node when the run directory is local."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    opts = {} if out.is_s3 else {"scheduling_strategy": NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)}
    return ray_get(task.options(**opts, **options).remote(*args))


def claim_run_dir(out: Store, cfg: Config, new_run: bool) -> bool:
    """Record the effective config; refuse a different config on an existing run. True when
    the run directory is new (nothing was there, or --new-run replaced it). A config recorded
    by an earlier ssl_ray lacks the settings added since: read with their defaults, it is the
    same run, and is recorded again as this version writes it."""
    text = dump_config(cfg)
    if out.exists("config.yaml"):
        old = out.read_bytes("config.yaml").decode()
        if old == text:
            return False
        difference = _first_difference(old, cfg)
        if difference is None:
            out.write_text("config.yaml", text)
            return False
        if not new_run:
            raise ConfigError(f"{out.uri} holds a run with another config ({difference}): "
                              f"use another output.dir, or --new-run to replace that run")
        out.delete_prefix()
    out.write_text("config.yaml", text)
    return True


def _first_difference(old_yaml: str, cfg: Config) -> str | None:
    """The first setting where the recorded config and `cfg` differ, both as this version
    reads them; None when they are the same."""
    import yaml

    def flat(node, prefix=""):
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): node}

    try:
        old = flat(to_dict(from_dict(Config, yaml.safe_load(old_yaml) or {})))
    except (ConfigError, yaml.YAMLError) as e:  # e.g. a setting removed since
        return f"the recorded config.yaml does not load: {e}"
    new = flat(to_dict(cfg))
    key = next((k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)), None)
    return None if key is None else f"{key}: {old.get(key)!r} -> {new.get(key)!r}"


def _run_round(cfg: Config, out: Store, r: int, state: RunState, n_labeled: int) -> dict:
    stage = f"rounds/r{r:03d}"
    if out.is_committed(stage):
        return json.loads(out.read_bytes(f"{stage}/metrics.json"))
    start = time.perf_counter()
    record: dict = {"round": r, "threshold": None, "labeled_images": n_labeled, "stage_seconds": {}}
    spec = TrainSpec(name=f"r{r:03d}", train=["labeled/train.parquet"], val=["labeled/val.parquet"],
                     names=state.names, weights=cfg.model.weights, stage=stage)
    if r > 0:
        spec = _pseudo_label(cfg, out, r, state, spec, record)
    t0 = time.perf_counter()
    if r == 0 and cfg.rounds.round0 == "evaluate":  # the given weights are round 0's: score them only
        record["held_out"] = evaluate_detector(cfg, out, spec)
        record["stage_seconds"]["evaluate"] = round(time.perf_counter() - t0, 1)
    else:
        record["held_out"] = train_detector(cfg, out, spec)
        record["stage_seconds"]["train"] = round(time.perf_counter() - t0, 1)
    record["seconds"] = round(time.perf_counter() - start, 1)
    out.write_text(f"{stage}/metrics.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    out.commit(stage)
    return record


def _pseudo_label(cfg: Config, out: Store, r: int, state: RunState, spec: TrainSpec, record: dict) -> TrainSpec:
    """Round r >= 1 up to training: label the pool with round r-1's weights, merge, export the
    review; the round's training spec (warm start, merged rows, labeled oversampling)."""
    stage, n_labeled = spec.stage, record["labeled_images"]
    teacher = out.uri_of(f"rounds/r{r - 1:03d}/weights/best.pt")
    record["threshold"] = conf = plan.threshold_for(r, cfg.rounds, cfg.select)
    class_conf = None
    if cfg.select.adaptive == "val_precision" and not out.exists(f"{stage}/{LABELED_MARKER}"):
        class_conf = val_class_thresholds(cfg, out, teacher, state.names, conf)
    if cfg.refine.enabled and not out.exists(REFINER):  # trained once, by the first round that labels
        t0 = time.perf_counter()
        _on_ray(out, _fit_refiner, cfg, out, num_cpus=cfg.refine.num_cpus)
        record["stage_seconds"]["refiner"] = round(time.perf_counter() - t0, 1)
    refiner = out.uri_of(REFINER) if cfg.refine.enabled else None
    record["label"] = label_pool(cfg, out, round=r, weights=teacher, names=state.names, conf=conf,
                                 class_conf=class_conf, refiner=refiner)
    record["stage_seconds"]["label"] = record["label"]["seconds"]
    t0 = time.perf_counter()
    record["train_images"] = _on_ray(out, _merge, out, stage)
    record["stage_seconds"]["merge"] = round(time.perf_counter() - t0, 1)
    if not out.exists(f"{stage}/review_export/ranking.csv"):
        t0 = time.perf_counter()
        _on_ray(out, _review, cfg, out, stage, state.names)
        record["stage_seconds"]["review"] = round(time.perf_counter() - t0, 1)
    record["labeled_copies"] = plan.labeled_copies(cfg.train.labeled_fraction, n_labeled,
                                                   record["train_images"] - n_labeled)
    weights, extra = plan.student_start(teacher, cfg.rounds, cfg.train.finetune_extra)
    return dataclasses.replace(spec, train=[f"{stage}/merged.parquet"], weights=weights,
                               labeled_copies=record["labeled_copies"], extra=extra)


def _ingest_impl(cfg: Config) -> tuple[list[str], int]:
    """Ingest the labeled set (or read it back); its class names and training image count."""
    labeled = ingest_labeled(cfg, Store(cfg.output.dir, cfg.storage))
    return labeled.names, len(labeled.train)


def _merge_impl(out: Store, stage: str) -> int:
    """`<stage>/merged.parquet`: the labeled rows plus the round's selection; its row count."""
    if not out.exists(f"{stage}/merged.parquet"):
        selected = read_parquet_rows(out, f"{stage}/pseudo")  # one part per finalize bucket
        labeled = read_parquet_rows(out, "labeled/train.parquet")
        write_parquet(out, f"{stage}/merged.parquet", plan.merge(labeled, selected))
    return parquet_num_rows(out, f"{stage}/merged.parquet")


def _finalize_impl(cfg: Config, names: list[str], rounds: list[dict], best: int) -> None:
    """final/: the best round's weights, its training rows as Parquet and as a YOLO tree that
    `yolo train` accepts as is; then the report."""
    from ssl_ray.report import write_report

    out = Store(cfg.output.dir, cfg.storage)
    stage = f"rounds/r{best:03d}"
    out.write_bytes("final/weights/best.pt", out.read_bytes(f"{stage}/weights/best.pt"))
    rows = read_parquet_rows(out, f"{stage}/merged.parquet" if best > 0 else "labeled/train.parquet")
    write_parquet(out, "final/dataset.parquet", rows)
    export_yolo_tree(cfg, out, "final/yolo", {"train": rows, "val": read_parquet_rows(out, "labeled/val.parquet")},
                     names)
    write_report(out, rounds, best)


def _review_impl(cfg: Config, out: Store, stage: str, names: list[str]) -> int:
    from ssl_ray.review import export_review

    return export_review(cfg, out, stage, names)


_ingest = LazyRemote(_ingest_impl, num_cpus=1)
_fit_refiner = LazyRemote(fit_refiner, num_cpus=1)
_review = LazyRemote(_review_impl, num_cpus=1)
_merge = LazyRemote(_merge_impl, num_cpus=1)
_finalize = LazyRemote(_finalize_impl, num_cpus=1)
