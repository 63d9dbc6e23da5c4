"""Stage: label the pool with a teacher on Ray (the thin Ray adapter over `io.pool`, `io.items`, the
teacher, `core.consistency`, `core.raw` and the finalize passes).

    listing (streaming Ray task -> Arrow blocks)  ->  decode + letterbox (CPU tasks; with
      label.decode: gpu a JPEG's header only)  ->  batched inference (actor pool, GPUs from
      config; with label.decode: gpu it decodes the JPEGs first)  ->  raw Parquet (at-least-once)
      ->  finalize (`stages.finalize`: parallel Ray tasks over hash buckets of the raw rows):
          dedupe, select, write the round's Parquet, summary

Outputs under `<out>/rounds/rNNN/`: predictions/, rejects/, pseudo/ (training rows:
pseudo + capped negatives), review/ (most uncertain first), selection/ (every pool image with
its outcome), label_summary.json and the unit's marker `_COMMITTED.label`, written last. A
finished stage is read back; an interrupted one is cleared and redone; one finished with
other settings is refused (or, with `redo`, redone).
"""

from __future__ import annotations

import json
import logging
import threading
import time

from ssl_ray.adapters.runtime import ensure_resources, ray_get
from ssl_ray.config import Config, absolute_weights, with_absolute_paths
from ssl_ray.core import accounting
from ssl_ray.core.accounting import significant
from ssl_ray.core.resources import label_data_budget
from ssl_ray.core.units import STEP_SETTINGS, Unit, pick
from ssl_ray.errors import LabelError
from ssl_ray.io.storage import StaleUnitError, Store, file_identity
from ssl_ray.stages.finalize import finalize, ray_mapper
from ssl_ray.stages.label_workers import DECODE_MEMORY, Counter, Predict, list_pool, load_batch
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)

OUTPUT_DIRS = ("raw", "scatter", "predictions", "rejects", "pseudo", "review", "review_export", "selection")
RAW_ROWS_PER_FILE = 10_000  # raw/ holds pool / this files, not one per inference batch


def label_unit(cfg: Config, round: int, weights: str, names: list[str], conf: float | None) -> Unit:
    """The label stage of `round` as a unit of work: what its output depends on."""
    return Unit(
        f"rounds/r{round:03d}",
        "label",
        settings=pick(result_settings(cfg), STEP_SETTINGS["label"]),
        inputs={
            "teacher": file_identity(absolute_weights(weights), cfg.storage),
            "names": list(names),
            "conf": cfg.select.conf if conf is None else conf,
        },
    )


def label_pool(
    cfg: Config,
    out: Store,
    *,
    round: int,
    weights: str,
    names: list[str],
    conf: float | None = None,
    class_conf: list[float] | None = None,
    refiner: str | None = None,
    redo: bool = False,
) -> dict:
    """Run (or read back) the label stage of `round`; return its summary.

    `names` are the classes of the labeled set, which the teacher must predict. `conf` is the
    round's global threshold; `class_conf` (e.g. from `val_class_thresholds`) one threshold
    per class instead. `refiner` is a saved box refiner (`stages.refine.fit_refiner`) that
    moves the teacher's boxes before selection. With `redo`, a stage finished with other
    settings is redone instead of refused.
    """
    import ray

    cfg, weights = with_absolute_paths(cfg), absolute_weights(weights)
    unit = label_unit(cfg, round, weights, names, conf)
    try:
        if (done := out.done(unit)) is not None:
            log.info("round %d already labeled", round)
            return done["result"]
    except StaleUnitError:
        if not redo:
            raise
        out.delete_prefix(unit.marker)
    stage = out.child(unit.folder)
    ensure_resources(cfg, "label")
    start = time.perf_counter()
    listing = list_pool.remote(cfg.pool.sources, cfg.storage, cfg.pool)
    *parts, last = list(listing)  # references only: the listing itself stays in the object store
    listing_summary = ray_get(last)  # the listing ends with what it skipped (a failed one with its error)
    skipped = listing_summary["skipped"]
    if not parts:
        what = f" (only files that are not images or videos: {_counts(skipped)})" if skipped else ""
        raise LabelError(f"pool.sources: no image or video under {', '.join(cfg.pool.sources)}{what}")
    for sub in OUTPUT_DIRS:
        stage.delete_prefix(sub)

    ds = ray.data.from_arrow_refs(parts)  # one block per listing part: decode and inference overlap
    options = ds.context.execution_options  # this dataset's own copy: the budget binds this stage only
    options.resource_limits = options.resource_limits.copy(object_store_memory=label_data_budget(cfg))
    listed = ds.count()  # listing rows (files, a video once per chunk), from block metadata, no execution
    # Decoding runs in its own CPU tasks, in parallel with inference, at most
    # label.decode_tasks at a time (each is a worker process: this bounds memory). Its memory
    # request also makes its remote args differ from the actors', which keeps Ray Data from
    # fusing decoding into the inference actors.
    ds = ds.map_batches(
        load_batch,
        fn_kwargs={"cfg": cfg},
        batch_size=8,
        num_cpus=1,
        memory=DECODE_MEMORY,
        compute=ray.data.TaskPoolStrategy(size=cfg.label.decode_tasks),
    )
    counter = Counter.options(num_cpus=0).remote()
    ds = ds.map_batches(
        Predict,
        fn_constructor_kwargs={"weights": weights, "cfg": cfg, "names": names, "refiner": refiner, "counter": counter},
        compute=ray.data.ActorPoolStrategy(
            min_size=cfg.label.min_actors,
            max_size=cfg.label.max_actors,
            max_concurrent_calls_per_actor=cfg.label.actor_calls,
        ),
        num_gpus=cfg.label.num_gpus_per_actor,
        num_cpus=cfg.label.num_cpus_per_actor,
        batch_size=cfg.label.batch_size,
        batch_format="numpy",
    )
    with _Reporter(counter, f"label r{round:03d}", listed if not listing_summary["videos"] else None):
        ds.write_parquet(stage.path("raw"), filesystem=stage.fs, min_rows_per_file=RAW_ROWS_PER_FILE)
    files = listing_summary["files"]
    summary = finalize(cfg, stage, names, round, weights, conf, files, class_conf, ray_mapper(cfg))
    summary["video_chunks"] = listed - (files - listing_summary["videos"])
    summary["skipped_not_media"] = sum(skipped.values())
    summary["skipped_by_extension"] = skipped
    if cfg.label.device_decode:  # JPEG decodes in the inference actors (at least once)
        summary["decoded_in_actors"] = ray_get(counter.get_decoded.remote())
    summary["seconds"] = significant(time.perf_counter() - start)
    summary["items_per_s"] = significant(summary["items"] / max(summary["seconds"], 1e-9))
    span = _inference_span(ds)  # the stage's rate once running: start-up (listing, actors' load) excluded
    summary["inference_seconds"] = span and significant(span)
    summary["inference_items_per_s"] = span and significant(summary["items"] / span)
    stage.delete_prefix("raw")
    stage.write_text("label_summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    problem = accounting.reject_fraction_error(
        accounting.quarantined(summary["rejected_by_reason"]), summary["items"], cfg.pool.max_reject_fraction
    )
    if problem:
        raise LabelError(problem)
    out.commit(unit, summary)
    return summary


def _inference_span(ds) -> float | None:
    """Seconds from the first inference batch's start to the last one's end, from Ray Data's
    execution stats; None when they are missing. Ray Data stamps each batch with its node's
    monotonic clock: across nodes the span is only as good as their clocks' agreement."""
    try:
        stack = [ds.get_stats_summary()]
    except Exception as e:  # a DeveloperAPI: a figure for the summary, never a failed stage
        log.warning("no inference timing from Ray Data's stats: %s", e)
        return None
    while stack:
        stats = stack.pop()
        for op in stats.operators_stats:
            if "Predict" in op.operator_name and op.earliest_start_time is not None:
                return max(op.latest_end_time - op.earliest_start_time, 1e-9)
        stack.extend(stats.parents)
    return None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


class _Reporter:
    """While the stage runs: a progress line every `period` seconds (items, rate and, when
    every listed file is one item, the time left)."""

    def __init__(self, counter, what: str, total: int | None, period: float = 15.0):
        self.counter, self.what, self.total, self.period = counter, what, total, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from ssl_ray.adapters.logs import progress

        start = time.perf_counter()
        while not self._stop.wait(self.period):
            try:
                done = ray_get(self.counter.get.remote())
            except Exception:  # noqa: BLE001 - a progress line is never worth a failed stage
                return
            rate = done / max(time.perf_counter() - start, 1e-9)
            left = f", about {(self.total - done) / rate / 60:.1f} min to go" if self.total and rate > 0 else ""
            of = f" of {self.total:,}" if self.total else ""
            progress(f"{self.what}: {done:,}{of} items, {rate:.1f} items/s{left}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
