"""The label stage's Ray workers; `stages.label` wires them into one Ray Data pipeline.

    list_pool   streaming task: the pool's images and video chunks as Arrow blocks
    load_batch  decode tasks: decode + letterbox a block's items (`io.items.load_items`)
    Predict     inference actors: the teacher over canvases and their consistency views
    Counter     an actor the inference actors add to and the driver reads (progress)

Everything here runs in a Ray worker process, not in the driver.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ssl_ray.adapters.runtime import LazyRemote, ray_get
from ssl_ray.config import Config
from ssl_ray.core.detections import Detections
from ssl_ray.core.raw import raw_table
from ssl_ray.errors import LabelError
from ssl_ray.io.video import TO_END

log = logging.getLogger(__name__)

LISTING_PART = 128  # items per listing block (an image 1, a video chunk its frames): one decode task each
DECODE_MEMORY = 2**30  # bytes reserved per decode task (a worker measured ~430 MiB)


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


list_pool = LazyRemote(_list_pool_impl, num_cpus=1, num_returns="streaming")


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


Counter = LazyRemote(_CounterImpl)


def load_batch(batch: dict, cfg: Config):
    """Decode + letterbox a batch of listing entries; yields item batches of at most 16."""
    from ssl_ray.io.export import UriReader
    from ssl_ray.io.items import LoadOptions, load_items

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


class Predict:
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


def check_classes(weights: str, names: list[str], teacher_names: list[str]) -> None:
    """The teacher must predict exactly the labeled set's classes, in order."""
    if list(names) != list(teacher_names):
        raise LabelError(
            f"model.weights: the teacher {weights} predicts classes {teacher_names[:10]}, "
            f"but the labeled set has {names}: train the teacher on the labeled set first"
        )
