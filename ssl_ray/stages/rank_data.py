"""Each training rank's data: its share of the training rows (`core.shards`) as a node-local
YOLO tree, and in online mode its share of the unlabeled images.

Rows are read a batch at a time and only the rank's share is kept; images come through the
node's content-addressed cache, so a node fetches its ranks' shares, not the whole set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
    its labels). Rows are read a batch at a time and only the share is kept; images come
    through the node's cache, so a node fetches its ranks' shares, not the whole set."""
    from ssl_ray.core.shards import padded_copies
    from ssl_ray.io.export import ImageCache, UriReader, read_parquet_rows, write_yolo_tree

    def copies(source: str) -> int:
        return spec.labeled_copies if source == "labeled" else 1

    train, counts, sizes, labeled = _share(out, spec.train, rank, world, copies)
    if world > 1 and min(sizes) == 0:
        from ssl_ray.errors import SslRayError

        raise SslRayError(
            f"train {spec.name}: {sum(sizes)} training images cannot be shared by {world} ranks "
            f"(shares of {sizes}); use fewer train.num_workers"
        )
    repeat = dict(zip((r["image_id"] for r in train), padded_copies(counts, max(sizes))))
    val = [row for rel in spec.val for row in read_parquet_rows(out, rel)]
    cache = ImageCache(Path(cfg.output.cache_dir).expanduser() / "images")
    reader = UriReader(cfg.storage)
    data_yaml = write_yolo_tree(
        folder, {"train": train, "val": val}, spec.names, cache, reader, repeat=lambda row: repeat[row["image_id"]]
    )
    if spec.unlabeled:
        rows, _, _, _ = _share(out, spec.unlabeled, rank, world, copies)
        rows = [row for row in rows if row["image_id"] not in labeled]
        rows.sort(key=lambda r: (r.get("video_uri") or "", r.get("frame_index") or 0, r["image_id"]))  # a video once
        paths = [str(cache.ensure(row["image_id"], lambda row=row: reader(row))) for row in rows]
        (folder / "unlabeled.txt").write_text("".join(f"{p}\n" for p in paths))
    return data_yaml


def _share(
    out: Store, rels: list[str], rank: int, world: int, copies
) -> tuple[list[dict], list[int], list[int], set[str]]:
    """Rank `rank`'s rows of the Parquet at `rels` and the copies of each it holds
    (`core.shards`: a row is on its hash's rank, a repeated row's `copies(source)` spread from
    there), the size of every rank's share in images, and the ids of every labeled row."""
    import pyarrow as pa

    from ssl_ray.core.shards import rank_of, spread
    from ssl_ray.io.export import iter_row_batches

    mine: list[dict] = []
    counts: list[int] = []
    sizes = [0] * world
    labeled: set[str] = set()
    for rel in rels:
        for batch in iter_row_batches(out, rel):
            ids, sources = batch.column("image_id").to_pylist(), batch.column("source").to_pylist()
            held = []
            for image_id, source in zip(ids, sources):
                n = copies(source)
                if n == 1:  # most rows: on one rank
                    r = rank_of(image_id or "", world)
                    sizes[r] += 1
                    held.append(int(r == rank))
                else:
                    per_rank = spread(image_id or "", n, world)
                    sizes = [a + b for a, b in zip(sizes, per_rank)]
                    held.append(per_rank[rank])
                if source == "labeled":
                    labeled.add(image_id)
            mine += batch.filter(pa.array([h > 0 for h in held])).to_pylist()
            counts += [h for h in held if h > 0]
    return mine, counts, sizes, labeled
