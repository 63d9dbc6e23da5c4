"""Each training rank's data: its share of the training rows (`core.shards`) as a node-local
YOLO tree, and in online mode its share of the unlabeled images.

Rows are read a batch at a time and only the rank's share is kept; images come through the
node's content-addressed cache, so a node fetches its ranks' shares, not the whole set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ssl_ray.config import Config
from ssl_ray.io.storage import Store

if TYPE_CHECKING:
    from ssl_ray.stages.train import TrainSpec


def materialize(cfg: Config, out: Store, spec: TrainSpec, folder: Path, rank: int = 0, world: int = 1) -> Path:
    """Rank `rank`'s YOLO tree at `folder`; its data.yaml. It holds the rank's share of the
    training rows (`core.shards`: 1/world of them, padded to the longest share; an
    oversampled labeled image on every rank when it has as many copies as ranks) and every
    held-out row; in online mode also its share of the unlabeled images, listed in
    `unlabeled.txt` (a pool image that is also a labeled training image is left out: it has
    its labels).

    The training rows stream: a first pass over their ids sizes every rank's share, a second
    writes this rank's rows a batch at a time, so the rank holds its rows' file names, never
    the rows. Images come through the node's cache, so a node fetches its ranks' shares, not
    the whole set."""
    from ssl_ray.core.shards import padding
    from ssl_ray.io.export import ImageCache, UriReader, YoloTree, read_parquet_rows

    def copies(source: str) -> int:
        return spec.labeled_copies if source == "labeled" else 1

    share = _Share(out, spec.train, rank, world, copies)
    if world > 1 and min(share.sizes) == 0:
        from ssl_ray.errors import SslRayError

        raise SslRayError(
            f"train {spec.name}: {sum(share.sizes)} training images cannot be shared by {world} ranks "
            f"(shares of {share.sizes}); use fewer train.num_workers"
        )
    cache = ImageCache(Path(cfg.output.cache_dir).expanduser() / "images")
    reader = UriReader(cfg.storage)
    tree = YoloTree(folder, spec.names, cache, reader)
    tree.prefetch(share.videos)
    tree.split("train")
    missing = max(share.sizes) - share.sizes[rank]
    for i, (row, held) in enumerate(share.rows()):
        tree.add("train", row, held + padding(i, share.count, missing))
    val = [row for rel in spec.val for row in read_parquet_rows(out, rel)]  # the held-out set: small
    tree.prefetch(val)
    tree.split("val")
    for row in val:
        tree.add("val", row)
    data_yaml = tree.finish()
    if spec.unlabeled:
        pool = _Share(out, spec.unlabeled, rank, world, copies, keep=("uri",))
        rows = [row for row, _ in pool.rows() if row["image_id"] not in share.labeled]
        rows.sort(key=lambda r: (r["video_uri"] or "", r["frame_index"] or 0, r["image_id"]))  # a video once
        paths = [str(cache.ensure(row["image_id"], lambda row=row: reader(row))) for row in rows]
        (folder / "unlabeled.txt").write_text("".join(f"{p}\n" for p in paths))
    return data_yaml


class _Share:
    """Rank `rank`'s share of the rows of the Parquet at `rels` (`core.shards`: a row is on its
    hash's rank, a repeated row's `copies(source)` spread from there), sized on construction
    from the rows' ids alone: every rank's share in images (`sizes`), how many rows this rank
    holds (`count`), the ids of the labeled rows and this rank's video frames (`videos`, to
    fetch in frame order). `rows()` then streams the share's rows (only `keep` and the ids when
    given) with the copies of each this rank holds."""

    _IDS = ["image_id", "source", "video_uri", "frame_index"]

    def __init__(self, out: Store, rels: list[str], rank: int, world: int, copies, keep: tuple[str, ...] | None = None):
        self.out, self.rels, self.rank, self.world, self.copies = out, rels, rank, world, copies
        self.columns = None if keep is None else [*self._IDS, *keep]
        self.sizes, self.count = [0] * world, 0
        self.labeled: set[str] = set()
        self.videos: list[dict] = []
        for batch, held in self._batches(self._IDS, sizes=self.sizes):
            self.count += sum(h > 0 for h in held)
            self.labeled.update(
                i
                for i, s in zip(batch.column("image_id").to_pylist(), batch.column("source").to_pylist())
                if s == "labeled"
            )
            if batch.column("video_uri").null_count < len(batch):
                self.videos += [r for r, h in zip(batch.to_pylist(), held) if h and r["video_uri"]]

    def rows(self, slice_rows: int = 4096):
        for batch, held in self._batches(self.columns):
            kept, copies = batch.filter(pa.array([h > 0 for h in held])), [h for h in held if h]
            for start in range(0, len(kept), slice_rows):  # a slice of Python dicts at a time
                yield from zip(kept.slice(start, slice_rows).to_pylist(), copies[start : start + slice_rows])

    def _batches(self, columns, sizes: list[int] | None = None):
        """(batch, copies of each of its rows on this rank); adds every rank's copies to `sizes`."""
        from ssl_ray.core.shards import rank_of, spread
        from ssl_ray.io.export import iter_row_batches

        for rel in self.rels:
            for batch in iter_row_batches(self.out, rel, columns):
                held = []
                for image_id, source in zip(batch.column("image_id").to_pylist(), batch.column("source").to_pylist()):
                    n = self.copies(source)
                    if n == 1:  # most rows: on one rank
                        r = rank_of(image_id or "", self.world)
                        if sizes is not None:
                            sizes[r] += 1
                        held.append(int(r == self.rank))
                    else:
                        per_rank = spread(image_id or "", n, self.world)
                        if sizes is not None:
                            sizes[:] = [a + b for a, b in zip(sizes, per_rank)]
                        held.append(per_rank[self.rank])
                yield batch, held
