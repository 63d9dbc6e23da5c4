"""Training data per rank (`core.shards`, `stages.rank_data.materialize`): each rank's tree holds
its share of the training rows, the shares are disjoint and together the whole set (an
oversampled labeled image's copies spread over the ranks, so that with enough copies every rank
holds it), every rank takes the same number of steps, and a node fetches only its ranks'
images."""

import collections
from pathlib import Path

import pytest

from ssl_ray.config import load_config
from ssl_ray.core.schema import box, make_row
from ssl_ray.core.shards import padding, rank_of, spread
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


@pytest.mark.parametrize("copies, world", [(1, 4), (3, 2), (4, 4), (7, 3), (2, 8), (5, 1)])
def test_a_repeated_rows_copies_spread_from_its_own_rank(copies, world):
    for image_id in (f"{i:032x}" for i in range(50)):
        per_rank = spread(image_id, copies, world)
        assert len(per_rank) == world and sum(per_rank) == copies  # the recipe's copies, no more
        assert max(per_rank) - min(per_rank) <= 1  # as even as they can be
        assert per_rank[rank_of(image_id, world)] == max(per_rank)  # its own rank first
        if copies >= world:
            assert min(per_rank) >= 1  # every rank holds the image
        if copies == 1:
            assert per_rank.index(1) == rank_of(image_id, world)


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
    missing = target - sum(copies)
    assert [c + padding(i, len(copies), missing) for i, c in enumerate(copies)] == expected
    assert sum(expected) == target


def test_padding_never_shortens_a_share():
    with pytest.raises(ValueError):
        padding(0, 3, -1)


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


def test_two_ranks_hold_disjoint_shares_that_make_the_whole_set_labeled_images_in_both(merged, tmp_path):
    from ssl_ray.stages.rank_data import materialize

    out, train = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    spec = _spec(labeled_copies=3, unlabeled=["rounds/r001/pool.parquet"])
    trees = {rank: tmp_path / "node" / f"rank{rank}" for rank in (0, 1)}
    for rank, folder in trees.items():
        materialize(cfg, out, spec, folder, rank, 2)
    files = {rank: _tree(folder, "train") for rank, folder in trees.items()}
    ids = {rank: _ids(names) for rank, names in files.items()}
    labeled = {r["image_id"] for r in train if r["source"] == "labeled"}
    assert ids[0] & ids[1] == labeled, "a pseudo-labeled image is in both shares, or a labeled one is not"
    assert ids[0] | ids[1] == {r["image_id"] for r in train}, "the shares are not the whole set"
    assert len(files[0]) == len(files[1]), "the ranks would take different numbers of steps"
    stems = {
        rank: collections.Counter(name.split(".")[0].split("~")[0] for name in names) for rank, names in files.items()
    }
    for image_id in labeled:  # x3 over the two ranks (1 + 2), more only where a share was padded
        assert stems[0][image_id] + stems[1][image_id] >= 3
        assert sorted(spread(image_id, 3, 2)) == [1, 2]
    recipe = [  # each rank's images as the rule gives them, before padding
        sum(spread(i, 3, 2)[rank] for i in labeled)
        + sum(rank_of(r["image_id"], 2) == rank for r in train if r["source"] != "labeled")
        for rank in (0, 1)
    ]
    assert len(files[0]) == max(recipe)  # the longer share as asked, the shorter one padded to it
    for rank, names in files.items():  # every copy with its label file
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
    from ssl_ray.stages.rank_data import materialize

    out, train = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    folder = tmp_path / "node" / "rank0"
    materialize(cfg, out, _spec(labeled_copies=2), folder)
    files = _tree(folder, "train")
    assert _ids(files) == {r["image_id"] for r in train}
    assert len(files) == len(train) + 12  # each labeled image twice, nothing padded


def test_more_ranks_than_the_set_can_share_is_a_clear_error(merged, tmp_path):
    from ssl_ray.errors import SslRayError
    from ssl_ray.stages.rank_data import materialize

    out, _ = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(SslRayError, match="cannot be shared by 200 ranks.*fewer train.num_workers"):
        materialize(cfg, out, _spec(), tmp_path / "node" / "rank0", 0, 200)


def test_a_share_read_in_small_batches_makes_the_same_tree(merged, tmp_path, monkeypatch):
    """The rows stream (ids first, then the rows a batch at a time): padding and oversampling
    come out the same whatever the batches, so a large share needs no more than a batch."""
    import ssl_ray.io.export as export
    from ssl_ray.stages.rank_data import materialize

    out, _ = merged
    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    spec = _spec(labeled_copies=3)
    batches = export.iter_row_batches
    trees = {}
    for batch_rows in (65_536, 7):
        monkeypatch.setattr(
            export, "iter_row_batches", lambda *a, n=batch_rows, **k: batches(*a, **{**k, "batch_rows": n})
        )
        for rank in (0, 1):
            trees[batch_rows, rank] = folder = tmp_path / "node" / f"{batch_rows}-{rank}"
            materialize(cfg, out, spec, folder, rank, 2)
    for rank in (0, 1):
        whole, small = trees[65_536, rank], trees[7, rank]
        for split in ("train", "val"):
            assert _tree(small, split) == _tree(whole, split)
            labels = {p.name: p.read_text() for p in (whole / "labels" / split).iterdir()}
            assert {p.name: p.read_text() for p in (small / "labels" / split).iterdir()} == labels
    padded = [len(_tree(trees[7, r], "train")) - len(_ids(_tree(trees[7, r], "train"))) for r in (0, 1)]
    assert min(padded) > 0 and padded[0] != padded[1]  # copies, and one share padded more than the other
