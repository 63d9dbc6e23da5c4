"""The rounds driver: resumable multi-round pseudo-labeling over the stages.

    round 0   train on the labeled set (rounds/r000)
    round r   label the pool with round r-1's best.pt at round r's threshold (boxes moved by
              the box refiner, trained once on the labeled set, with refine.enabled)
              -> merge labeled + selected rows (rounds/rNNN/merged.parquet/, Ray Data)
              -> train, warm-started from round r-1's weights -> held-out metrics
              (train.ssl: online: train on the labeled set with a mean teacher labeling
              the pool's accepted images every step, `_online_spec`)
    control   with rounds.control: per round r >= 1, the labeled set alone trained from the
              last control segment (round 0's weights for the first) for as many steps as
              round r trained (times rounds.control), in rounds/rNNN/control/
    final     the best round's weights and dataset (final/), report (report/)

Every step is a unit of work (`ssl_ray.core.units`): it ends by writing its marker, keyed by
the settings and inputs it was produced with, and a finished unit is read back, never redone
or rewritten. A crash resumes at the first unfinished unit. A command whose settings differ
from those a finished unit was produced with is refused, naming the setting
(`claim_run_dir`); operational settings (resources, retries, `rounds.max_rounds`) may change.

The driver does no heavy work itself: ingest (decoding every labeled image) and the report
run as Ray tasks; labeling, merging and the final export are Ray Data (`stages.datasets`),
training Ray Train. With a local run directory those tasks are pinned to the driver's node
(the only node that sees its files); with S3 they go wherever Ray places them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ssl_ray.config import Config, dump_config, with_absolute_paths
from ssl_ray.core import rounds as plan
from ssl_ray.core.units import ROUND_OMITS, STEP_SETTINGS, Unit, omit, pick, setting_difference
from ssl_ray.errors import ConfigError
from ssl_ray.io.storage import StaleUnitError, Store
from ssl_ray.stages.calibrate import val_class_thresholds
from ssl_ray.stages.datasets import export_final, merge_round
from ssl_ray.stages.evaluate import evaluate_detector
from ssl_ray.stages.ingest import ingest_labeled
from ssl_ray.stages.label import label_pool, label_unit
from ssl_ray.stages.refine import REFINER, fit_refiner, refiner_unit
from ssl_ray.stages.train import TrainSpec, train_detector
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)


@dataclass
class RunState:
    names: list[str]
    rounds: list[dict] = field(default_factory=list)  # metrics.json of each finished round
    control: list[dict] = field(default_factory=list)  # rounds.control: one segment per round >= 1

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
    if cfg.rounds.control:
        state.control = _run_control(cfg, out, state)
    best = plan.best_round(state.scores)
    final = Unit(
        "final",
        settings=omit(result_settings(cfg), ROUND_OMITS),
        inputs={"rounds": len(state.rounds), "best": best, "control": cfg.rounds.control},
    )
    try:
        done = out.done(final)
    except StaleUnitError:  # the run has grown (more rounds, a control): final/ and report/ anew
        done = None
    if done is None:
        _finalize(cfg, out, state.names, state.rounds, best, state.control)
        out.commit(final, {"best_round": best})
    return state


def _run_control(cfg: Config, out: Store, state: RunState) -> list[dict]:
    """The labeled-only control (`rounds.control`): one training segment per round >= 1, each
    from the last one's best weights (the first from round 0's), as many epochs as that round
    ran, its labeled images repeated so that every epoch has at least `rounds.control` times
    the round's images. Same start, same restarts, (at least) the same steps: what the labels
    alone reach when trained as long as the rounds."""
    segments, weights = [], out.uri_of("rounds/r000/weights/best.pt")
    batch = cfg.train.batch * cfg.train.num_workers
    for record in state.rounds[1:]:
        r = record["round"]
        steps = plan.control_plan(record, cfg.rounds.control, batch)
        spec = TrainSpec(
            name=f"c{r:03d}",
            train=["labeled/train.parquet"],
            val=["labeled/val.parquet"],
            names=state.names,
            weights=weights,
            stage=f"rounds/r{r:03d}/control",
            labeled_copies=steps["labeled_copies"],
            epochs=steps["epochs"],
            patience=steps["epochs"],
        )
        held_out = train_detector(cfg, out, spec, also=ROUND_OMITS)
        segments.append({"round": r, **steps, "held_out": held_out})
        weights = out.uri_of(f"{spec.folder}/weights/best.pt")
    return segments


def _on_ray(out: Store, fn, *args, num_cpus: float = 1):
    """Run a driver-side step as a Ray task and wait for it; on the driver's node when the run
    directory is local."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ssl_ray.adapters.runtime import ray_map

    opts = (
        {}
        if out.is_s3
        else {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        }
    )
    (result,) = ray_map(fn, [args], num_cpus=num_cpus, **opts)
    return result


def finished_units(out: Store) -> list[dict]:
    """The markers of every finished unit of the run at `out` (in its folders and their
    sub-folders: labeled/, refiner/, rounds/rNNN/, train/NAME/, final/)."""
    found = []
    for top in out.names(folders=True):
        found += out.markers(top)
        for sub in out.names(top, folders=True):
            found += out.markers(f"{top}/{sub}")
    return found


def claim_run_dir(out: Store, cfg: Config, new_run: bool) -> bool:
    """Record the effective config at `out`; True when the run starts anew there.

    A run directory with finished work is resumed only when no finished unit was produced
    with a setting this config changes (`ConfigError` names the first one); `new_run`
    replaces it instead. A run that finished nothing yet (it failed or was stopped before its
    first unit) holds nothing worth keeping: it starts anew, whatever its config was."""
    finished = finished_units(out) if out.exists("config.yaml") else []
    if finished and new_run:
        out.delete_prefix()
        finished = []
    settings = result_settings(with_absolute_paths(cfg))  # as the units recorded them
    for record in finished:
        problem = setting_difference(record, settings)
        if problem:
            raise ConfigError(
                f"{out.uri} holds a run with another config ({problem}; in {record['unit']}): "
                f"use another output.dir, or --new-run to replace that run"
            )
    if not finished and out.exists("config.yaml"):
        out.delete_prefix()  # leftovers of a run that finished no unit
    out.write_text("config.yaml", dump_config(cfg))
    return not finished


def _run_round(cfg: Config, out: Store, r: int, state: RunState, n_labeled: int) -> dict:
    stage = f"rounds/r{r:03d}"
    unit = Unit(stage, settings=omit(result_settings(cfg), ROUND_OMITS))
    if (done := out.done(unit)) is not None:
        return done["result"]
    start = time.perf_counter()
    record: dict = {"round": r, "threshold": None, "labeled_images": n_labeled, "stage_seconds": {}}
    spec = TrainSpec(
        name=f"r{r:03d}",
        train=["labeled/train.parquet"],
        val=["labeled/val.parquet"],
        names=state.names,
        weights=cfg.model.weights,
        stage=stage,
        epochs=cfg.train.round0_epochs if r == 0 else None,
    )
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
    out.commit(unit, record)
    return record


def _pseudo_label(cfg: Config, out: Store, r: int, state: RunState, spec: TrainSpec, record: dict) -> TrainSpec:
    """Round r >= 1 up to training: label the pool with round r-1's weights, merge, export the
    review; the round's training spec (warm start, merged rows, labeled oversampling)."""
    stage, n_labeled = spec.stage, record["labeled_images"]
    teacher = out.uri_of(f"rounds/r{r - 1:03d}/weights/best.pt")
    record["threshold"] = conf = plan.threshold_for(r, cfg.rounds, cfg.select)
    class_conf = None
    labeled = out.done(label_unit(cfg, r, teacher, state.names, conf)) is not None
    if cfg.select.adaptive == "val_precision" and not labeled:
        class_conf = val_class_thresholds(cfg, out, teacher, state.names, conf)
    if cfg.refine.enabled and out.done(refiner_unit(cfg)) is None:  # trained once, by the first round that labels
        t0 = time.perf_counter()
        _on_ray(out, fit_refiner, cfg, out, num_cpus=cfg.refine.num_cpus)
        record["stage_seconds"]["refiner"] = round(time.perf_counter() - t0, 1)
    refiner = out.uri_of(REFINER) if cfg.refine.enabled else None
    record["label"] = label_pool(
        cfg, out, round=r, weights=teacher, names=state.names, conf=conf, class_conf=class_conf, refiner=refiner
    )
    record["stage_seconds"]["label"] = record["label"]["seconds"]
    label_settings = pick(result_settings(cfg), STEP_SETTINGS["label"])
    merge = Unit(stage, "merge", settings=label_settings)
    if (done := out.done(merge)) is None:
        t0 = time.perf_counter()
        record["train_images"] = merge_round(out, stage)
        record["stage_seconds"]["merge"] = round(time.perf_counter() - t0, 1)
        out.commit(merge, record["train_images"])
    else:
        record["train_images"] = done["result"]
    review = Unit(stage, "review", settings=label_settings)
    if out.done(review) is None:
        t0 = time.perf_counter()
        out.commit(review, _on_ray(out, _review, cfg, out, stage, state.names))
        record["stage_seconds"]["review"] = round(time.perf_counter() - t0, 1)
    if cfg.train.ssl == "online":
        return _online_spec(cfg, out, spec, record, state.names)
    record["labeled_copies"] = plan.labeled_copies(
        cfg.train.labeled_fraction, n_labeled, record["train_images"] - n_labeled
    )
    return dataclasses.replace(
        spec, train=[f"{stage}/merged.parquet"], weights=teacher, labeled_copies=record["labeled_copies"]
    )


def _online_spec(cfg: Config, out: Store, spec: TrainSpec, record: dict, names: list[str]) -> TrainSpec:
    """Round r >= 1 in online mode (`train.ssl: online`): the round's dataset and review are
    made as offline, but the detector trains on the labeled set with a mean teacher labeling
    the pool's accepted images every step (`adapters.online`), from round r-1's weights.
    Reliable pseudo-boxes are those at the class thresholds the label stage selected with (and
    with `train.refine_pseudo`, moved by the box refiner the label stage used). An
    epoch is one pass over the pool: the labeled images repeat to as many batches."""
    label = record["label"]
    n_labeled = record["labeled_images"]
    n_pool = sum(label[k] for k in ("pseudo", "negative", "uncertain"))
    if n_pool == 0:
        raise ConfigError("train.ssl: online needs unlabeled images, and no pool image was accepted this round")
    record["labeled_copies"] = plan.online_copies(n_labeled, n_pool)
    record["epoch_images"] = n_labeled * record["labeled_copies"]
    record["unlabeled_images"] = n_pool
    thresholds = label["class_thresholds"]
    return dataclasses.replace(
        spec,
        train=["labeled/train.parquet"],
        weights=out.uri_of(f"rounds/r{record['round'] - 1:03d}/weights/best.pt"),
        labeled_copies=record["labeled_copies"],
        unlabeled=[f"{spec.stage}/predictions"],
        class_conf=[float(thresholds[n]) for n in names],
        refiner=out.uri_of(REFINER) if cfg.train.refine_pseudo else None,
    )


def _ingest(cfg: Config) -> tuple[list[str], int]:
    """Ingest the labeled set (or read it back); its class names and training image count."""
    labeled = ingest_labeled(cfg, Store(cfg.output.dir, cfg.storage))
    return labeled.names, len(labeled.train)


def _finalize(cfg: Config, out: Store, names: list[str], rounds: list[dict], best: int, control: list[dict]) -> None:
    """final/: the best round's weights, its training rows as Parquet and as a YOLO tree that
    `yolo train` accepts as is (`stages.datasets`); then the report."""
    from ssl_ray.stages.report import write_report

    stage = f"rounds/r{best:03d}"
    out.delete_prefix("final")
    out.write_bytes("final/weights/best.pt", out.read_bytes(f"{stage}/weights/best.pt"))
    export_final(cfg, out, f"{stage}/merged.parquet" if best > 0 else "labeled/train.parquet", names)
    _on_ray(out, write_report, out, rounds, best, control)


def _review(cfg: Config, out: Store, stage: str, names: list[str]) -> int:
    from ssl_ray.stages.review import export_review

    return export_review(cfg, out, stage, names)
