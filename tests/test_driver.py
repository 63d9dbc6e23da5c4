"""The rounds driver end to end on local Ray and local disk (tiny: imgsz 64, 2 epochs)."""

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ssl_ray.config import load_config
from ssl_ray.errors import ConfigError

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


def tiny(shapes, tmp_path, *extra):
    return load_config(
        DEMO,
        [
            f"labeled.data={shapes}",
            f"pool.sources=[{shapes.parent / 'images' / 'pool'}]",
            f"output.dir={tmp_path / 'run'}",
            f"output.cache_dir={tmp_path / 'cache'}",
            "model.imgsz=64",
            "train.epochs=2",
            "train.batch=8",
            "rounds.max_rounds=2",
            "rounds.patience=2",
            "rounds.conf_schedule=[0.002, 0.002]",
            "select.negative_max_score=0.001",
            "label.score_floor=0.0",
            "refine.steps=20",
            "refine.batch=16",
            *extra,
        ],
    )


# Every selection mechanism on: adaptive thresholds from val precision (an untrained teacher
# never reaches the target, so they fall back to the schedule: no floor above it), a flipped view for
# consistency (any agreement accepted, so something is selected), the learned box refiner (a few
# steps; every box), class balance and oversampling; the rounds train offline, on that dataset (the online
# default has its own test below).
MECHANISMS = [
    "train.ssl=offline",
    "select.adaptive=val_precision",
    "select.target_precision=0.5",
    "select.adaptive_floor=0.0",
    "label.consistency_views=[flip]",
    "refine.enabled=true",
    "refine.steps=20",
    "refine.batch=16",
    "refine.min_score=0.0",
    "select.min_agreement=0.0",
    "select.max_images_per_class=6",
    "select.max_boxes=1",
    "train.labeled_fraction=0.5",
]


def digests(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.ray
@pytest.mark.train
def test_rounds_end_to_end_resume_and_config_guard(ray_local, shapes, tmp_path):
    from ssl_ray.adapters.runtime import prepare_ultralytics
    from ssl_ray.driver import run_rounds

    cfg = tiny(shapes, tmp_path, *MECHANISMS)
    state = run_rounds(cfg)
    run = tmp_path / "run"
    assert [r["round"] for r in state.rounds] == [0, 1, 2]
    for r in range(3):
        stage = run / "rounds" / f"r{r:03d}"
        assert (stage / "_COMMITTED").exists() and (stage / "weights" / "best.pt").exists()
        metrics = json.loads((stage / "metrics.json").read_text())
        assert {"mAP50", "mAP50-95", "per_class"} <= set(metrics["held_out"])
        (args,) = (tmp_path / "cache" / "train").glob(f"r{r:03d}-*/run/args.yaml")
        started = yaml.safe_load(args.read_text())["model"]  # round r starts from round r-1's weights
        assert started.endswith(f"rounds/r{r - 1:03d}/weights/best.pt") if r else started == "yolo26n.yaml"
        markers = sorted(p.name for p in stage.glob("_COMMITTED*"))
        assert markers == (
            ["_COMMITTED", "_COMMITTED.label", "_COMMITTED.merge", "_COMMITTED.review", "_COMMITTED.train"]
            if r
            else ["_COMMITTED", "_COMMITTED.train"]
        )
        if r:
            lab = metrics["label"]
            assert lab["items"] == 40 and lab["pseudo"] + lab["negative"] + lab["uncertain"] + lab["rejected"] == 40
            assert metrics["threshold"] == 0.002
            merged = pq.read_table(stage / "merged.parquet")
            assert merged.num_rows == len(set(merged.column("image_id").to_pylist()))
            assert merged.num_rows == 24 + lab["pseudo_used"] + lab["negative_used"] == metrics["train_images"]
            assert 0 < lab["pseudo_used"] <= 3 * 6 and lab["pseudo_used"] <= lab["pseudo"]  # at most 6 per class
            assert set(lab["class_thresholds"]) == {"circle", "square", "triangle"}
            boxes = [b for row in pq.read_table(stage / "predictions").to_pylist() for b in row["boxes"]]
            assert boxes and all(b["agree"] in (0.0, 1.0) for b in boxes)  # one flipped view: agrees or not
            copies = metrics["labeled_copies"]
            assert copies == max(1, round(metrics["train_images"] / 24 - 1))
            (tree,) = (tmp_path / "cache" / "train").glob(f"r{r:03d}-*/data/rank0/images/train")  # one rank: all rows
            assert len(list(tree.iterdir())) == 24 * copies + metrics["train_images"] - 24
            export = stage / "review_export"
            tasks = json.loads((export / "label_studio.json").read_text())
            review = pq.read_table(stage / "review").num_rows
            assert len(tasks) == review == len((export / "ranking.csv").read_text().splitlines()) - 1
            assert len(list((export / "images" / "review").iterdir())) == review
            assert all(Path(t["data"]["image"]).exists() for t in tasks)

    # the box refiner: trained once, before round 1, on the labeled images; checked on val
    refiner = json.loads((run / "refiner" / "refiner.json").read_text())
    assert refiner["images"] == 24 and refiner["val_check"]["boxes"] > 0 and (run / "refiner" / "refiner.pt").exists()
    assert (run / "refiner" / "_COMMITTED").exists() and (run / "final" / "_COMMITTED").exists()
    assert "refiner" in json.loads((run / "rounds" / "r001" / "metrics.json").read_text())["stage_seconds"]
    assert "refiner" not in json.loads((run / "rounds" / "r002" / "metrics.json").read_text())["stage_seconds"]

    # final outputs: the best round's, readable and trainable as they are
    dataset = pq.read_table(run / "final" / "dataset.parquet")
    assert {"image_id", "source", "round", "boxes", "video_uri", "frame_index", "teacher"} <= set(dataset.column_names)
    best = json.loads((run / "report" / "report.json").read_text())["best_round"]
    assert best == max(range(3), key=lambda r: (state.scores[r], -r))
    assert (run / "final" / "weights" / "best.pt").read_bytes() == (
        run / "rounds" / f"r{best:03d}" / "weights" / "best.pt"
    ).read_bytes()
    for name in ("report.md", "map_per_round.png", "pseudo_per_class.png"):
        assert (run / "report" / name).stat().st_size > 0
    ultralytics = prepare_ultralytics(tmp_path / "ul")
    ultralytics.YOLO("yolo26n.yaml").train(
        data=str(run / "final" / "yolo" / "data.yaml"),
        epochs=1,
        imgsz=64,
        batch=8,
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        project=str(tmp_path / "plain"),
        name="t",
        verbose=False,
    )

    # re-running the same command changes nothing: committed rounds are read back
    before = digests(run)
    again = run_rounds(cfg)
    assert again.scores == state.scores and digests(run) == before

    # another config on the same run directory is refused, naming the first difference
    with pytest.raises(ConfigError, match=r"holds a run with another config \(select.conf: 0.5 -> 0.7; in "):
        run_rounds(tiny(shapes, tmp_path, *MECHANISMS, "select.conf=0.7"))
    assert digests(run) == before  # refused: nothing touched

    # operational settings may change (resources); one more round extends the finished run
    longer = run_rounds(
        tiny(shapes, tmp_path, *MECHANISMS, "rounds.max_rounds=3", "rounds.patience=3", "label.batch_size=8")
    )
    assert len(longer.rounds) == 4 and longer.scores[:3] == state.scores
    assert json.loads((run / "report" / "report.json").read_text())["rounds"][3]["round"] == 3


def test_run_directory_guard(tmp_path):
    """A run directory is refused only for settings its finished units were produced with."""
    from ssl_ray.core.units import Unit
    from ssl_ray.driver import claim_run_dir
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.ingest import ingest_unit
    from ssl_ray.typed import result_settings

    out = Store(str(tmp_path / "run"))
    cfg = load_config(DEMO)
    assert claim_run_dir(out, cfg, new_run=False) is True
    out.write_text("rounds/r000/leftover.bin", "x")  # a run that finished nothing: anything goes, and anew
    assert claim_run_dir(out, load_config(DEMO, ["train.epochs=5"]), new_run=False) is True
    assert not out.exists("rounds/r000/leftover.bin")

    out.commit(ingest_unit(cfg))  # the labeled set is in: what it depends on is fixed now
    assert claim_run_dir(out, load_config(DEMO, ["train.epochs=5"]), new_run=False) is False
    with pytest.raises(
        ConfigError,
        match=r"\(labeled.on_error: 'fail' -> 'skip'; in labeled/_COMMITTED\): "
        r"use another output.dir, or --new-run",
    ):
        claim_run_dir(out, load_config(DEMO, ["labeled.on_error=skip"]), new_run=False)

    out.commit(Unit("rounds/r000", settings=result_settings(cfg)))  # round 0 is done: every setting is fixed
    with pytest.raises(ConfigError, match=r"\(train.epochs: 30 -> 5; in rounds/r000/_COMMITTED\)"):
        claim_run_dir(out, load_config(DEMO, ["train.epochs=5"]), new_run=False)
    assert out.exists("rounds/r000/_COMMITTED")  # refused: nothing touched
    assert claim_run_dir(out, load_config(DEMO, ["rounds.max_rounds=5", "ray.num_cpus=4"]), new_run=False) is False
    assert claim_run_dir(out, load_config(DEMO, ["train.epochs=5"]), new_run=True) is True
    assert not out.exists("rounds/r000/_COMMITTED")
    assert "epochs: 5" in out.read_bytes("config.yaml").decode()


def test_run_directory_guard_relative_weights(tmp_path, monkeypatch):
    """A relative weights path resumes its run: units record it made absolute, and so is the
    config that claims the run directory again (the smoke job passes one)."""
    from ssl_ray.config import with_absolute_paths
    from ssl_ray.core.units import Unit
    from ssl_ray.driver import claim_run_dir
    from ssl_ray.io.storage import Store
    from ssl_ray.typed import result_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.pt").write_bytes(b"weights")
    out = Store(str(tmp_path / "run"))
    cfg = load_config(DEMO, ["model.weights=mine.pt"])
    assert claim_run_dir(out, cfg, new_run=False) is True
    out.commit(Unit("rounds/r000", settings=result_settings(with_absolute_paths(cfg))))
    assert claim_run_dir(out, load_config(DEMO, ["model.weights=mine.pt"]), new_run=False) is False
    with pytest.raises(ConfigError, match=r"model.weights: '.*mine.pt' -> 'yolo26n.yaml'"):
        claim_run_dir(out, load_config(DEMO, ["model.weights=yolo26n.yaml"]), new_run=False)


@pytest.mark.ray
@pytest.mark.train
@pytest.mark.s3
def test_rounds_end_to_end_with_the_run_directory_on_s3(ray_local, shapes, tmp_path, bucket, storage_cfg, s3):
    import pyarrow.fs as pafs

    from ssl_ray.driver import run_rounds

    cfg = tiny(
        shapes,
        tmp_path,
        f"output.dir=s3://{bucket}/runs/r1",
        "rounds.max_rounds=1",
        f"storage.endpoint_url={storage_cfg.endpoint_url}",
        "storage.region=us-east-1",
    )
    state = run_rounds(cfg)
    assert [r["round"] for r in state.rounds] == [0, 1]

    def objects() -> dict:
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/r1/")
        return {o["Key"][len("runs/r1/") :]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    keys = objects()
    for key in (
        "config.yaml",
        "labeled/_COMMITTED",
        "rounds/r000/_COMMITTED",
        "rounds/r001/_COMMITTED",
        "rounds/r001/_COMMITTED.label",
        "final/_COMMITTED",
        "final/weights/best.pt",
        "final/yolo/data.yaml",
        "report/report.md",
        "report/score_histogram.png",
    ):
        assert key in keys, key
    assert any(k.startswith("final/yolo/images/train/") for k in keys)
    for folder in ("rounds/r001/merged.parquet", "final/dataset.parquet"):  # folders of Parquet files
        assert any(k.startswith(f"{folder}/") and k.endswith(".parquet") for k in keys), folder
    assert not any("/raw/" in k for k in keys)  # the at-least-once scratch output is gone
    lab = state.rounds[1]["label"]
    assert lab["items"] == 40 == lab["pseudo"] + lab["negative"] + lab["uncertain"] + lab["rejected"]

    fs = pafs.S3FileSystem(
        endpoint_override=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region="us-east-1",
        scheme="http",
    )
    dataset = pq.read_table(f"{bucket}/runs/r1/final/dataset.parquet", filesystem=fs)
    best = state.rounds[max(range(2), key=lambda r: (state.scores[r], -r))]
    assert dataset.num_rows == best.get("train_images", 24)

    run_rounds(cfg)  # re-run: read back, nothing rewritten, final/ included
    assert objects() == keys


@pytest.mark.ray
@pytest.mark.train
def test_round0_evaluate_scores_the_given_weights_without_training(ray_local, shapes, tmp_path, teachers):
    from ssl_ray.driver import run_rounds

    cfg = tiny(
        shapes, tmp_path, "rounds.round0=evaluate", f"model.weights={teachers['yolo26n']}", "rounds.max_rounds=1"
    )
    state = run_rounds(cfg)
    r0 = tmp_path / "run" / "rounds" / "r000"
    held = state.rounds[0]["held_out"]
    assert held["evaluated"] == teachers["yolo26n"] and 0 <= held["mAP50-95"] <= 1 and "per_class" in held
    assert (r0 / "weights" / "best.pt").read_bytes() == Path(teachers["yolo26n"]).read_bytes()
    assert not (r0 / "ray").exists() and "train" not in state.rounds[0]["stage_seconds"]  # no Ray Train run
    assert (r0 / "_COMMITTED.evaluate").exists()
    assert state.rounds[1]["label"]["teacher"].endswith("rounds/r000/weights/best.pt")


@pytest.mark.ray
@pytest.mark.train
def test_online_rounds_train_with_a_teacher_and_still_write_the_dataset(ray_local, shapes, tmp_path):
    """`train.ssl: online`: round 1 trains on the labeled set with a mean teacher over the
    pool's accepted images, an epoch per pass over the pool; its dataset, review and report
    are made as offline, and the control matches its steps; the teacher fuses its flip view
    (`train.teacher_consistency`) and the box refiner moves its boxes (`train.refine_pseudo`)."""
    from ssl_ray.driver import run_rounds

    cfg = tiny(
        shapes,
        tmp_path,
        "train.ssl=online",
        "select.adaptive=global",
        "rounds.max_rounds=1",
        "rounds.control=1",
        "train.refine_pseudo=true",
        "train.teacher_consistency=true",
        "refine.min_score=0.001",  # the tiny teacher's boxes score ~0.002 (rounds.conf_schedule)
    )
    state = run_rounds(cfg)
    r1 = state.rounds[1]
    pool = r1["unlabeled_images"]
    assert pool == sum(r1["label"][k] for k in ("pseudo", "negative", "uncertain")) > 0
    assert r1["labeled_copies"] * r1["labeled_images"] >= pool  # an epoch covers the pool once
    assert r1["epoch_images"] == r1["labeled_images"] * r1["labeled_copies"]
    run = tmp_path / "run"
    ranks = sorted((tmp_path / "cache" / "train").glob("r001-*/run/ranks/rank0.jsonl"))
    records = [json.loads(line) for line in ranks[0].read_text().splitlines()]
    assert all(r["pseudo_boxes_per_image"]["unlabeled_images"] > 0 and "teacher_digest" in r for r in records)
    assert sum(r["pseudo_boxes_per_image"]["refined"] for r in records) > 0  # train.refine_pseudo: the refiner ran
    assert (run / "rounds" / "r001" / "merged.parquet").exists() and (run / "final" / "dataset.parquet").exists()
    assert state.control[0]["iterations"] >= state.control[0]["round_iterations"]
    assert "round 1" in (run / "report" / "report.md").read_text()
