"""Stage: labeled dataset -> contract Parquet under `<out>/labeled/`, committed.

    <out>/labeled/train.parquet, val.parquet   rows (source 'labeled', round 0)
    <out>/labeled/rejects.parquet               skipped images with reasons (on_error=skip)
    <out>/labeled/_COMMITTED                    written last

Re-running over a committed `labeled/` does nothing. A failure writes nothing (the dataset is
read and validated in full before the first write).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ssl_ray import dataset
from ssl_ray.config import Config
from ssl_ray.errors import ConfigError
from ssl_ray.export import read_parquet_rows, write_parquet, write_rejects
from ssl_ray.storage import Store

log = logging.getLogger(__name__)

PREFIX = "labeled"


@dataclass
class LabeledSet:
    names: list[str]
    train: list[dict]
    val: list[dict]
    rejects: int


def ingest_labeled(cfg: Config, out: Store) -> LabeledSet:
    """Read, validate and commit the labeled set; return it (read back when already committed)."""
    if not cfg.labeled.data:
        raise ConfigError("labeled.data: required (path or s3:// URI of the labeled data.yaml)")
    stage = out.child(PREFIX)

    def factory(uri: str) -> Store:
        return Store(uri, cfg.storage)

    data = dataset.load_data_yaml(cfg.labeled.data, factory)
    names = data.names
    if stage.is_committed():
        log.info("labeled set already committed at %s", stage.uri)
        return LabeledSet(names, read_parquet_rows(stage, "train.parquet"), read_parquet_rows(stage, "val.parquet"), 0)
    kw = {"on_error": cfg.labeled.on_error, "max_pixels": cfg.pool.max_pixels}
    train = dataset.read_split(data, "train", **kw)
    val = dataset.read_split(data, "val", **kw)
    if not train.rows:
        raise ConfigError(f"labeled.data: {cfg.labeled.data} has no usable training image")
    stage.delete_prefix()  # leftovers of an interrupted attempt
    write_parquet(stage, "train.parquet", train.rows)
    write_parquet(stage, "val.parquet", val.rows)
    rejects = train.rejects + val.rejects
    if rejects:
        write_rejects(stage, "rejects.parquet", rejects)
    stage.commit(info={"train": len(train.rows), "val": len(val.rows), "rejects": len(rejects), "names": names})
    return LabeledSet(names, train.rows, val.rows, len(rejects))
