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
    return load_config(DEMO, [
        f"labeled.data={shapes}", f"pool.sources=[{shapes.parent / 'images' / 'pool'}]",
        f"output.dir={tmp_path / 'run'}", f"output.cache_dir={tmp_path / 'cache'}", "model.imgsz=64",
        "train.epochs=2", "train.batch=8", "rounds.max_rounds=2", "rounds.patience=2",
        "rounds.conf_schedule=[0.002, 0.002]", "select.negative_max_score=0.001", "label.score_floor=0.0", *extra])


# Every selection mechanism on: adaptive thresholds from val precision (an untrained teacher
# never reaches the target, so they fall back to the schedule: no floor above it), a flipped view for
# consistency (any agreement accepted, so something is selected), a zoomed view refining the
# boxes (64 px * 1.25 = 80, off the model's stride), the learned box refiner (a few steps;
# each box also read mirrored; every box, and its spread measured), class balance, oversampling,
# trainer arguments for the warm-started rounds only, and the box losses of the pseudo-boxes the
# refiner was unsure of weighted.
MECHANISMS = ["select.adaptive=val_precision", "select.target_precision=0.5", "select.adaptive_floor=0.0",
              "label.consistency_views=[flip]",
              "label.refine_views=[zoom:1.25]", "refine.enabled=true", "refine.steps=20", "refine.batch=16",
              "refine.tta=h", "refine.min_score=0.0", "train.max_box_spread=0.0",
              "select.min_agreement=0.0", "select.max_images_per_class=6",
              "select.ambiguous_images=mask", "select.max_boxes=1",  # the boxes past the first: masked
              "train.labeled_fraction=0.5", "train.finetune_extra={warmup_epochs: 0.5}", "train.pseudo_box_weight=0.5"]


def digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.ray
@pytest.mark.train
def test_rounds_end_to_end_resume_and_config_guard(ray_local, shapes, tmp_path):
    from ssl_ray.driver import run_rounds
    from ssl_ray.runtime import prepare_ultralytics

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
        assert yaml.safe_load(args.read_text())["warmup_epochs"] == (0.5 if r else 3.0)  # Ultralytics' default
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
            assert all(b["spread"] >= 0 for b in boxes)  # refine.min_score 0: every box's spread measured
            copies = metrics["labeled_copies"]
            assert copies == max(1, round(metrics["train_images"] / 24 - 1))
            (tree,) = (tmp_path / "cache" / "train").glob(f"r{r:03d}-*/data/images/train")
            assert len(list(tree.iterdir())) == 24 * copies + metrics["train_images"] - 24
            marks = json.loads((tree.parents[1] / "pseudo_marks.json").read_text())  # their box losses: x 0.5
            pseudo = {row["image_id"]: row["boxes"] for row in merged.to_pylist() if row["source"] == "pseudo"}
            assert marks and set(marks) <= set(pseudo)
            assert sum(map(len, marks.values())) == sum(b["spread"] > 0 for bs in pseudo.values() for b in bs)
            masked = [row for row in merged.to_pylist() if row["ignore"]]
            assert masked and len(masked) <= lab["pseudo_masked"]["images"]
            assert sorted(p.stem for p in tree.glob("*~masked.*")) == sorted(
                f"{row['image_id']}~masked" for row in masked)
            export = stage / "review_export"
            tasks = json.loads((export / "label_studio.json").read_text())
            review = pq.read_table(stage / "review").num_rows
            assert len(tasks) == review == len((export / "ranking.csv").read_text().splitlines()) - 1
            assert len(list((export / "images" / "review").iterdir())) == review
            assert all(Path(t["data"]["image"]).exists() for t in tasks)

    # the box refiner: trained once, before round 1, on the labeled images; checked on val
    refiner = json.loads((run / "refiner" / "refiner.json").read_text())
    assert refiner["images"] == 24 and refiner["val_check"]["boxes"] > 0 and (run / "refiner" / "refiner.pt").exists()
    assert "refiner" in json.loads((run / "rounds" / "r001" / "metrics.json").read_text())["stage_seconds"]
    assert "refiner" not in json.loads((run / "rounds" / "r002" / "metrics.json").read_text())["stage_seconds"]

    # final outputs: the best round's, readable and trainable as they are
    dataset = pq.read_table(run / "final" / "dataset.parquet")
    assert {"image_id", "source", "round", "boxes", "video_uri", "frame_index", "teacher"} <= set(dataset.column_names)
    best = json.loads((run / "report" / "report.json").read_text())["best_round"]
    assert best == max(range(3), key=lambda r: (state.scores[r], -r))
    assert (run / "final" / "weights" / "best.pt").read_bytes() == \
        (run / "rounds" / f"r{best:03d}" / "weights" / "best.pt").read_bytes()
    for name in ("report.md", "map_per_round.png", "pseudo_per_class.png"):
        assert (run / "report" / name).stat().st_size > 0
    ultralytics = prepare_ultralytics(tmp_path / "ul")
    ultralytics.YOLO("yolo26n.yaml").train(data=str(run / "final" / "yolo" / "data.yaml"), epochs=1, imgsz=64, batch=8,
                                           device="cpu", workers=0, amp=False, plots=False,
                                           project=str(tmp_path / "plain"), name="t", verbose=False)

    # re-running the same command changes nothing: committed rounds are read back
    before = digests(run)
    again = run_rounds(cfg)
    assert again.scores == state.scores and digests(run) == before

    # another config on the same run directory is refused, naming the first difference
    with pytest.raises(ConfigError, match=r"holds a run with another config \(select.conf: 0.5 -> 0.7\)"):
        run_rounds(tiny(shapes, tmp_path, *MECHANISMS, "select.conf=0.7"))


def test_run_directory_guard(tmp_path):
    from ssl_ray.driver import claim_run_dir
    from ssl_ray.storage import Store

    out = Store(str(tmp_path / "run"))
    claim_run_dir(out, load_config(DEMO), new_run=False)
    claim_run_dir(out, load_config(DEMO), new_run=False)  # the same config: resume
    out.write_text("rounds/r000/_COMMITTED", "{}")
    with pytest.raises(ConfigError, match=r"\(rounds.max_rounds: 2 -> 5\): use another output.dir, or --new-run"):
        claim_run_dir(out, load_config(DEMO, ["rounds.max_rounds=5"]), new_run=False)
    assert out.exists("rounds/r000/_COMMITTED")  # refused: nothing touched
    claim_run_dir(out, load_config(DEMO, ["rounds.max_rounds=5"]), new_run=True)
    assert not out.exists("rounds/r000/_COMMITTED")
    assert "max_rounds: 5" in out.read_bytes("config.yaml").decode()


def test_run_recorded_by_an_earlier_version_resumes(tmp_path):
    """A config.yaml written before a setting existed is the same run (the setting takes its
    default) and is recorded again in full; one with a setting removed since is refused by name."""
    import yaml

    from ssl_ray.config import dump_config
    from ssl_ray.driver import claim_run_dir
    from ssl_ray.storage import Store

    cfg = load_config(DEMO)
    older = yaml.safe_load(dump_config(cfg))
    del older["ray"]["num_workers_soft_limit"], older["train"]["labeled_fraction"]
    out = Store(str(tmp_path / "run"))
    out.write_text("config.yaml", yaml.safe_dump(older, sort_keys=False))
    assert claim_run_dir(out, cfg, new_run=False) is False
    assert out.read_bytes("config.yaml").decode() == dump_config(cfg)

    older["label"]["gone"] = 1
    out.write_text("config.yaml", yaml.safe_dump(older, sort_keys=False))
    with pytest.raises(ConfigError, match=r"does not load: label.gone: unknown setting.*--new-run"):
        claim_run_dir(out, cfg, new_run=False)


@pytest.mark.ray
@pytest.mark.train
@pytest.mark.s3
def test_rounds_end_to_end_with_the_run_directory_on_s3(ray_local, shapes, tmp_path, bucket, storage_cfg, s3):
    import pyarrow.fs as pafs

    from ssl_ray.driver import run_rounds

    cfg = tiny(shapes, tmp_path, f"output.dir=s3://{bucket}/runs/r1", "rounds.max_rounds=1",
               f"storage.endpoint_url={storage_cfg.endpoint_url}", "storage.region=us-east-1")
    state = run_rounds(cfg)
    assert [r["round"] for r in state.rounds] == [0, 1]

    def objects() -> dict:
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/r1/")
        return {o["Key"][len("runs/r1/"):]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    keys = objects()
    for key in ("config.yaml", "labeled/_COMMITTED", "rounds/r000/_COMMITTED", "rounds/r001/_COMMITTED",
                "rounds/r001/_LABELED", "rounds/r001/merged.parquet", "final/weights/best.pt",
                "final/dataset.parquet", "final/yolo/data.yaml", "report/report.md", "report/score_histogram.png"):
        assert key in keys, key
    assert any(k.startswith("final/yolo/images/train/") for k in keys)
    assert not any("/raw/" in k for k in keys)  # the at-least-once scratch output is gone
    lab = state.rounds[1]["label"]
    assert lab["items"] == 40 == lab["pseudo"] + lab["negative"] + lab["uncertain"] + lab["rejected"]

    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                           region="us-east-1", scheme="http")
    dataset = pq.read_table(f"{bucket}/runs/r1/final/dataset.parquet", filesystem=fs)
    best = state.rounds[max(range(2), key=lambda r: (state.scores[r], -r))]
    assert dataset.num_rows == best.get("train_images", 24)

    run_rounds(cfg)  # re-run: read back, nothing rewritten except final/ and report/ (same bytes)
    assert objects() == keys


@pytest.mark.ray
@pytest.mark.train
def test_round0_evaluate_scores_the_given_weights_without_training(ray_local, shapes, tmp_path, teachers):
    from ssl_ray.driver import run_rounds

    cfg = tiny(shapes, tmp_path, "rounds.round0=evaluate", f"model.weights={teachers['yolo26n']}",
               "rounds.max_rounds=1", "rounds.student_init=yolo26n.yaml", "train.finetune_extra={warmup_epochs: 0.5}")
    state = run_rounds(cfg)
    r0 = tmp_path / "run" / "rounds" / "r000"
    held = state.rounds[0]["held_out"]
    assert held["evaluated"] == teachers["yolo26n"] and 0 <= held["mAP50-95"] <= 1 and "per_class" in held
    assert (r0 / "weights" / "best.pt").read_bytes() == Path(teachers["yolo26n"]).read_bytes()
    assert not (r0 / "ray").exists() and "train" not in state.rounds[0]["stage_seconds"]  # no Ray Train run
    assert state.rounds[1]["label"]["teacher"].endswith("rounds/r000/weights/best.pt")
    # round 1 trains a new student from rounds.student_init, with no fine-tuning arguments
    (args,) = (tmp_path / "cache" / "train").glob("r001-*/run/args.yaml")
    args = yaml.safe_load(args.read_text())
    assert args["model"] == "yolo26n.yaml" and args["warmup_epochs"] == 3.0
