"""Stage: labeled dataset -> contract Parquet under `<out>/labeled/`, committed.

    <out>/labeled/train.parquet, val.parquet   rows (source 'labeled', round 0)
    <out>/labeled/rejects.parquet               skipped images with reasons (on_error=skip)
    <out>/labeled/_COMMITTED                    written last (the unit's marker)

Re-running over a committed `labeled/` reads it back. A failure writes nothing (the dataset is
read and validated in full before the first write).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ssl_ray.config import Config
from ssl_ray.core.units import STEP_SETTINGS, Unit, pick
from ssl_ray.errors import ConfigError
from ssl_ray.io import dataset
from ssl_ray.io.export import read_parquet_rows, write_parquet, write_rejects
from ssl_ray.io.storage import Store
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)

PREFIX = "labeled"


@dataclass
class LabeledSet:
    names: list[str]
    train: list[dict]
    val: list[dict]
    rejects: int


def ingest_unit(cfg: Config) -> Unit:
    return Unit(PREFIX, settings=pick(result_settings(cfg), STEP_SETTINGS["ingest"]))


def ingest_labeled(cfg: Config, out: Store) -> LabeledSet:
    """Read, validate and commit the labeled set; return it (read back when already committed)."""
    if not cfg.labeled.data:
        raise ConfigError("labeled.data: required (path or s3:// URI of the labeled data.yaml)")
    unit, stage = ingest_unit(cfg), out.child(PREFIX)
    data = dataset.load_data_yaml(cfg.labeled.data, lambda uri: Store(uri, cfg.storage))
    if (done := out.done(unit)) is not None:
        log.info("labeled set already committed at %s", stage.uri)
        return LabeledSet(
            data.names,
            read_parquet_rows(stage, "train.parquet"),
            read_parquet_rows(stage, "val.parquet"),
            done["result"]["rejects"],
        )
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
    out.commit(unit, {"train": len(train.rows), "val": len(val.rows), "rejects": len(rejects), "names": data.names})
    return LabeledSet(data.names, train.rows, val.rows, len(rejects))
