"""Training data per rank (`core.shards`, `stages.train.materialize`): each rank's tree holds
its share of the training rows, the shares are disjoint and together the whole set, every
rank takes the same number of steps, and a node fetches only its ranks' images."""

import collections
from pathlib import Path

import pytest

from ssl_ray.config import load_config
from ssl_ray.core.schema import box, make_row
from ssl_ray.core.shards import padded_copies, rank_of
from ssl_ray.io.export import write_parquet
from ssl_ray.io.storage import Store

NAMES = ["a", "b"]


def test_a_row_keeps_its_rank_whatever_else_is_in_the_set():
    ids = [f"{i:032x}" for i in range(2000)]
    ranks = [rank_of(i, 4) for i in ids]
    assert ranks == [rank_of(i, 4) for i in ids]  # a hash of the id, not of the position
    assert set(ranks) == {0, 1, 2, 3}
    assert max(collections.Counter(ranks).values()) < 2000 / 4 * 1.15  # near even, sequential ids too
    assert {rank_of(i, 1) for i in ids} == {0}


@pytest.mark.parametrize(
    "copies, target, expected",
    [
        ([1, 1, 1], 3, [1, 1, 1]),  # the longest share: as asked
        ([1, 1, 1], 5, [2, 2, 1]),  # one more copy per row in turn
        ([3, 1], 9, [6, 3]),  # oversampled labeled rows pad like the rest
        ([1], 4, [4]),
        ([], 0, []),
    ],
)
def test_padding_evens_the_shares(copies, target, expected):
    assert padded_copies(copies, target) == expected
    assert sum(expected) == target


def test_padding_never_shortens_a_share():
    with pytest.raises(ValueError):
        padded_copies([1, 1, 1], 2)


def _rows(files, offset, n, source):
    return [
        make_row(
            image_id=f"{offset + i:032x}",
            uri=str(files[i % len(files)]),
            width=32,
            height=24,
            source=source,
            round=0 if source == "labeled" else 1,
            boxes=[box(i % 2, 0.5, 0.5, 0.2, 0.2)] if source != "negative" else [],
        )
        for i in range(n)
    ]


@pytest.fixture
def merged(tmp_path):
    """A round's training rows (12 labeled, 3 of them oversampled x3, 50 pseudo, 8
    negatives) and 20 held-out rows, pointing at 4 real JPEGs."""
    import numpy as np
    from PIL import Image

    files = []
    for i in range(4):
        path = tmp_path / "src" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(path)
        files.append(path)
    out = Store(str(tmp_path / "run"))
    labeled = _rows(files, 1 << 100, 12, "labeled")
    train = labeled + _rows(files, 1 << 101, 50, "pseudo") + _rows(files, 1 << 102, 8, "negative")
    write_parquet(out, "rounds/r001/merged.parquet/part-0.parquet", train[:30])  # a folder of parts
    write_parquet(out, "rounds/r001/merged.parquet/part-1.parquet", train[30:])
    write_parquet(out, "labeled/val.parquet", _rows(files, 1 << 103, 20, "labeled"))
    write_parquet(out, "rounds/r001/pool.parquet", labeled[:2] + _rows(files, 1 << 104, 30, "pseudo"))
    return out, train


def _spec(**kw):
    from ssl_ray.stages.train import TrainSpec

    return TrainSpec(
        name="r001",
        train=["rounds/r001/merged.parquet"],
        val=["labeled/val.parquet"],
        names=NAMES,
        weights="yolo26n.yaml",
        **kw,
    )


def _tree(folder: Path, split: str) -> list[str]:
    return sorted(p.name for p in (folder / "images" / split).iterdir())


def _ids(files) -> set[str]:
    return {name.split(".")[0].split("~")[0] for name in files}


def test_two_ranks_hold_disjoint_shares_that_make_the_whole_set(merged, tmp_path):
    from ssl_ray.stages.train import materialize

    out, train = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    spec = _spec(labeled_copies=3, unlabeled=["rounds/r001/pool.parquet"])
    trees = {rank: tmp_path / "node" / f"rank{rank}" for rank in (0, 1)}
    for rank, folder in trees.items():
        materialize(cfg, out, spec, folder, rank, 2)
    files = {rank: _tree(folder, "train") for rank, folder in trees.items()}
    ids = {rank: _ids(names) for rank, names in files.items()}
    assert not ids[0] & ids[1], "a training image is in both shares"
    assert ids[0] | ids[1] == {r["image_id"] for r in train}, "the shares are not the whole set"
    labeled = {r["image_id"] for r in train if r["source"] == "labeled"}
    assert ids[0] & labeled and ids[1] & labeled, "a rank has no labeled image"
    assert len(files[0]) == len(files[1]), "the ranks would take different numbers of steps"
    for rank, names in files.items():  # a labeled image x3, every copy with its label file
        stems = collections.Counter(name.split(".")[0].split("~")[0] for name in names)
        assert all(stems[i] >= 3 for i in ids[rank] & labeled)
        labels = {p.stem for p in (trees[rank] / "labels" / "train").iterdir()}
        assert labels == {name.split(".")[0] for name in names}
    for folder in trees.values():  # every rank validates on the whole held-out set
        assert len(_tree(folder, "val")) == 20
    # Online mode: the pool shared the same way, the labeled images left out.
    pool = {
        rank: _ids(Path(p).name for p in (folder / "unlabeled.txt").read_text().split())
        for rank, folder in trees.items()
    }
    assert not pool[0] & pool[1] and len(pool[0] | pool[1]) == 30 and not (pool[0] | pool[1]) & labeled
    # The node's cache holds what its ranks hold, each image once.
    cached = _ids(p.name for p in (tmp_path / "cache" / "images").rglob("*.*"))
    assert cached == ids[0] | ids[1] | _ids(_tree(trees[0], "val")) | pool[0] | pool[1]


def test_one_rank_holds_everything_as_before(merged, tmp_path):
    from ssl_ray.stages.train import materialize

    out, train = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    folder = tmp_path / "node" / "rank0"
    materialize(cfg, out, _spec(labeled_copies=2), folder)
    files = _tree(folder, "train")
    assert _ids(files) == {r["image_id"] for r in train}
    assert len(files) == len(train) + 12  # each labeled image twice, nothing padded


def test_more_ranks_than_the_set_can_share_is_a_clear_error(merged, tmp_path):
    from ssl_ray.errors import SslRayError
    from ssl_ray.stages.train import materialize

    out, _ = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(SslRayError, match="cannot be shared by 200 ranks.*fewer train.num_workers"):
        materialize(cfg, out, _spec(), tmp_path / "node" / "rank0", 0, 200)
