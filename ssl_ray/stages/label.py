"""Stage: label the pool with a teacher on Ray (the thin Ray adapter over `io.pool`, the
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

import numpy as np
import pyarrow as pa

from ssl_ray.adapters.runtime import LazyRemote, ensure_resources, ray_get
from ssl_ray.config import Config, absolute_weights, with_absolute_paths
from ssl_ray.core import accounting
from ssl_ray.core.accounting import significant
from ssl_ray.core.detections import Detections
from ssl_ray.core.raw import raw_table
from ssl_ray.core.resources import label_data_budget
from ssl_ray.core.units import STEP_SETTINGS, Unit, pick
from ssl_ray.errors import SslRayError
from ssl_ray.io.storage import StaleUnitError, Store, file_identity
from ssl_ray.io.video import TO_END
from ssl_ray.stages.finalize import finalize, ray_mapper
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)

LISTING_PART = 128  # items per listing block (an image 1, a video chunk its frames): one decode task each
DECODE_MEMORY = 2**30  # bytes reserved per decode task (a worker measured ~430 MiB)
OUTPUT_DIRS = ("raw", "scatter", "predictions", "rejects", "pseudo", "review", "review_export", "selection")
RAW_ROWS_PER_FILE = 10_000  # raw/ holds pool / this files, not one per inference batch


class LabelError(SslRayError):
    """The label stage ran but its result is not acceptable (e.g. too many rejects)."""


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
    listing = _list_pool.remote(cfg.pool.sources, cfg.storage, cfg.pool)
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
        _load_batch,
        fn_kwargs={"cfg": cfg},
        batch_size=8,
        num_cpus=1,
        memory=DECODE_MEMORY,
        compute=ray.data.TaskPoolStrategy(size=cfg.label.decode_tasks),
    )
    counter = _Counter.options(num_cpus=0).remote()
    ds = ds.map_batches(
        _Predict,
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


def check_classes(weights: str, names: list[str], teacher_names: list[str]) -> None:
    """The teacher must predict exactly the labeled set's classes, in order."""
    if list(names) != list(teacher_names):
        raise LabelError(
            f"model.weights: the teacher {weights} predicts classes {teacher_names[:10]}, "
            f"but the labeled set has {names}: train the teacher on the labeled set first"
        )


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
            if "_Predict" in op.operator_name and op.earliest_start_time is not None:
                return max(op.latest_end_time - op.earliest_start_time, 1e-9)
        stack.extend(stats.parents)
    return None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _list_pool_impl(sources: list[str], storage, pool):
    """Streaming generator task: the pool's images and video chunks as Arrow tables of about
    LISTING_PART items each (a video chunk counts as its sampled frames, so a long video's
    chunks spread over decode tasks), then a summary: the files it skipped (not media) by
    extension, the files and videos it listed."""
    from ssl_ray.io.export import UriReader
    from ssl_ray.io.pool import iter_pool, video_chunks

    reader = UriReader(storage)
    part: list[tuple] = []
    cost = files = videos = 0
    skipped: dict[str, int] = {}
    for uri, size, kind in iter_pool(sources, storage, skipped):
        files += 1
        videos += kind == "video"
        chunks = video_chunks(uri, pool, reader.open) if kind == "video" and size else [(0, TO_END)]
        for start, stop in chunks:
            part.append((uri, size, kind, start, stop))
            cost += 1 if kind == "image" else pool.video_chunk_samples
            if cost >= LISTING_PART:
                yield _listing_table(part)
                part, cost = [], 0
    if part:
        yield _listing_table(part)
    yield {"skipped": skipped, "files": files, "videos": videos}


def _listing_table(part: list[tuple]) -> pa.Table:
    uris, sizes, kinds, starts, stops = zip(*part)
    return pa.table(
        {
            "uri": list(uris),
            "size": pa.array(sizes, pa.int64()),
            "kind": list(kinds),
            "start": pa.array(starts, pa.int64()),  # a video chunk's frames: [start, stop)
            "stop": pa.array(stops, pa.int64()),
        }
    )


_list_pool = LazyRemote(_list_pool_impl, num_cpus=1, num_returns="streaming")


class _CounterImpl:
    """Items the inference actors have labeled so far, and JPEGs they decoded (they add; the
    driver reads). At least once: a batch redone after a lost actor counts again."""

    def __init__(self):
        self.items = self.decoded = 0

    def add(self, n: int, decoded: int = 0) -> None:
        self.items += n
        self.decoded += decoded

    def get(self) -> int:
        return self.items

    def get_decoded(self) -> int:
        return self.decoded


_Counter = LazyRemote(_CounterImpl)


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


def _load_batch(batch: dict, cfg: Config):
    """Decode + letterbox a batch of listing entries; yields item batches of at most 16."""
    from ssl_ray.io.export import UriReader
    from ssl_ray.io.pool import LoadOptions, load_items

    reader = UriReader(cfg.storage)
    opts = LoadOptions(
        imgsz=cfg.model.imgsz, pool=cfg.pool, stride=canvas_stride(cfg), device_decode=cfg.label.device_decode
    )
    rows: list[dict] = []
    entries = zip(batch["uri"], batch["size"], batch["kind"], batch["start"], batch["stop"])
    for uri, size, kind, start, stop in entries:
        chunk = (int(start), int(stop))
        for item in load_items(str(uri), int(size), opts, reader.read, str(kind), open_file=reader.open, chunk=chunk):
            rows.append(item)
            if len(rows) == 16:
                yield columns(rows)
                rows = []
    if rows:
        yield columns(rows)


def canvas_stride(cfg: Config) -> int:
    """`LoadOptions.stride` for `label.canvas`: 0 (square) or the detectors' largest stride."""
    return 32 if cfg.label.canvas == "rect" else 0


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """One (N, H, W, 3) array when the canvases share a shape; else an object array of them
    (Ray Data carries it as a variable-shaped tensor column)."""
    if len({image.shape for image in images}) <= 1:
        return np.stack(images)
    out = np.empty(len(images), dtype=object)
    out[:] = images
    return out


def columns(rows: list[dict]) -> dict:
    """Item dicts -> typed numpy columns. Missing provenance travels as ''/-1/NaN, not None
    (object columns of None come back from Arrow as NaN); `raw_table` turns them back."""

    def col(k):
        return [r[k] for r in rows]

    return {
        "image_id": np.array(col("image_id")),
        "uri": np.array(col("uri")),
        "width": np.array(col("width"), np.int32),
        "height": np.array(col("height"), np.int32),
        "video_uri": np.array([v or "" for v in col("video_uri")]),
        "frame_index": np.array([-1 if v is None else v for v in col("frame_index")], np.int64),
        "timestamp_s": np.array([np.nan if v is None else v for v in col("timestamp_s")], np.float64),
        "ratio": np.array(col("ratio"), np.float64),
        "pad_x": np.array(col("pad_x"), np.float64),
        "pad_y": np.array(col("pad_y"), np.float64),
        "reject_reason": np.array(col("reject_reason")),
        "reject_detail": np.array(col("reject_detail")),
        "image": stack_images(col("image")),
        "encoded": objects(col("encoded")),  # a JPEG for the actor to decode (label.decode: gpu), else b""
        "orientation": np.array(col("orientation"), np.int8),
    }


def objects(values: list) -> np.ndarray:
    """A 1-D object array of `values` (numpy would make bytes a fixed-width, NUL-stripped type)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class _Predict:
    """Inference actor: one teacher per actor, a batched forward over the canvases and their
    consistency views, detections fused and mapped back, then the optional box refiner. With
    `label.decode: gpu` it first decodes the batch's JPEGs on its device (`device_canvases`)."""

    def __init__(self, weights: str, cfg: Config, names: list[str], refiner: str | None = None, counter=None):
        from ssl_ray.adapters.teacher import Teacher, resolve_weights
        from ssl_ray.stages.refine import load_refiner

        threads = max(1, int(cfg.label.num_cpus_per_actor)) if cfg.label.num_gpus_per_actor == 0 else None
        local = resolve_weights(weights, cfg.output.cache_dir, cfg.storage)
        self.teacher = Teacher(local, cfg.output.cache_dir, threads=threads)
        check_classes(weights, names, self.teacher.names)
        self.floor = cfg.label.score_floor
        self.view_specs = cfg.label.consistency_views
        self.views = {}  # (height, width) of a canvas -> its views
        self.iou = cfg.label.consistency_iou
        self.refiner = load_refiner(refiner, cfg.storage, str(self.teacher.device), cfg.refine) if refiner else None
        self.counter = counter
        self.device_decode = cfg.label.device_decode
        self.imgsz, self.stride, self.max_pixels = cfg.model.imgsz, canvas_stride(cfg), cfg.pool.max_pixels
        if self.device_decode and self.teacher.device.type == "cpu":
            log.warning("label.decode: %s on an actor without a GPU: JPEGs are decoded in the actor", cfg.label.decode)

    def detect(self, images) -> list[Detections]:
        """Each canvas's detections, fused over the views, refined when a refiner is loaded;
        canvases of different shapes (`label.canvas: rect`) one shape at a time. `images`:
        an array (or object array) of canvases, or a list of tensors on the device."""
        from ssl_ray.core.consistency import detect_by_shape

        if isinstance(images, np.ndarray):
            return detect_by_shape(self._detect, images)
        import torch

        return detect_by_shape(self._detect, images, stack=torch.stack)

    def _detect(self, images) -> list[Detections]:
        from ssl_ray.core.consistency import detect_with_views, parse_views
        from ssl_ray.stages.refine import refine_detections

        h, w = images.shape[1:3]
        if (h, w) not in self.views:
            self.views[(h, w)] = parse_views(self.view_specs, w, h)
        predict = lambda batch: self.teacher.predict(batch, self.floor)  # noqa: E731
        if isinstance(images, np.ndarray):
            found = detect_with_views(predict, images, self.views[(h, w)], self.iou)
        else:
            import torch

            from ssl_ray.adapters.decode import apply_view

            found = detect_with_views(predict, images, self.views[(h, w)], self.iou, apply=apply_view, concat=torch.cat)
        if self.refiner is None:
            return found
        on_host = images if isinstance(images, np.ndarray) else images.cpu().numpy()  # the refiner takes arrays
        return refine_detections(self.refiner, on_host, found)

    def __call__(self, batch: dict) -> pa.Table:
        if self.device_decode:
            batch, images = self.decode(batch)
        else:
            ok = np.array([not r for r in batch["reject_reason"]], dtype=bool)
            images = batch["image"] if ok.all() else batch["image"][ok]  # no copy when nothing was rejected
        table = raw_table(batch, self.detect(images) if len(images) else [])
        if self.counter is not None:
            self.count(len(batch["uri"]), sum(1 for data in batch["encoded"] if len(data)))
        return table

    def count(self, items: int, decoded: int) -> None:
        """Progress, fire and forget; with JPEGs decoded here, waited for, so that the stage's
        summary counts them all (a lost counter costs the figure, never the stage)."""
        if not decoded:
            self.counter.add.remote(items)
            return
        try:
            ray_get(self.counter.add.remote(items, decoded))
        except Exception as e:  # noqa: BLE001 - a figure for the summary, never a failed batch
            log.warning("the label stage's counter did not answer: %s", e)

    def decode(self, batch: dict) -> tuple[dict, list]:
        """(the batch, its canvases on the teacher's device): `adapters.decode.decode_batch`."""
        from ssl_ray.adapters.decode import decode_batch

        return decode_batch(batch, self.imgsz, self.stride, self.max_pixels, self.teacher.device)
