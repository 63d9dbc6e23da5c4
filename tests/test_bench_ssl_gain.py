"""bench/ssl_gain.py: its child runs (a local Ray that starts too slowly is retried, nothing
else is), the gap it reports and how it scores the pseudo-labels against the truth."""

import json
from types import SimpleNamespace

import pytest

from bench import ssl_gain


def _children(monkeypatch, codes: list[int]) -> list[list[str]]:
    """Make each child run exit with the next of `codes`; returns the command lines run."""
    calls, codes = [], list(codes)

    def run(cmd, stdout, stderr, **kwargs):
        calls.append(cmd)
        return SimpleNamespace(returncode=codes.pop(0))

    monkeypatch.setattr(ssl_gain.subprocess, "run", run)
    monkeypatch.setattr(ssl_gain.time, "sleep", lambda s: None)
    return calls


@pytest.mark.parametrize(
    "codes, runs, fails",
    [
        ([0], 1, False),
        ([75, 0], 2, False),
        ([75, 75, 0], 3, False),
        ([75, 75, 75], 3, True),  # three tries, then the failure is reported
        ([1], 1, True),  # any other failure is not retried
        ([75, 1], 2, True),
    ],
)
def test_execute_retries_only_a_ray_start_timeout(monkeypatch, tmp_path, codes, runs, fails):
    calls = _children(monkeypatch, codes)
    overrides = [f"output.dir={tmp_path / 'run'}", "seed=0"]
    if fails:
        with pytest.raises(RuntimeError, match="run failed"):
            ssl_gain.execute(overrides, tmp_path / "logs" / "run.log")
    else:
        assert ssl_gain.execute(overrides, tmp_path / "logs" / "run.log") == tmp_path / "run"
    assert len(calls) == runs
    assert all(json.loads(c[-1]) == overrides for c in calls)


def test_a_branched_variant_starts_from_the_ssl_runs_round0_or_fails_with_it(monkeypatch, tmp_path):
    from concurrent.futures import Future

    calls = _children(monkeypatch, [0])
    ssl_out, overrides = tmp_path / "0-ssl", [f"output.dir={tmp_path / '0-v'}", "train.ssl=online"]
    failed = Future()
    failed.set_exception(RuntimeError("0-ssl failed (exit 1)"))
    with pytest.raises(RuntimeError, match="ended without a round 0 to branch from: 0-ssl failed"):
        ssl_gain.branched(overrides, tmp_path / "v.log", ssl_out, failed)  # never waits forever
    assert calls == []
    (ssl_out / "rounds" / "r000").mkdir(parents=True)
    (ssl_out / "rounds" / "r000" / "metrics.json").write_text("{}")
    assert ssl_gain.branched(overrides, tmp_path / "v.log", ssl_out, Future()) == tmp_path / "0-v"
    best = ssl_out / "rounds" / "r000" / "weights" / "best.pt"
    assert json.loads(calls[0][-1]) == [*overrides, f"model.weights={best}", "rounds.round0=evaluate"]


def test_the_oracle_trains_with_the_ssl_runs_settings_but_its_own_data_and_budget(tmp_path):
    from ssl_ray.config import load_config

    data, pool, init = tmp_path / "data" / "data.yaml", tmp_path / "pool", tmp_path / "init.pt"
    also = ["train.extra={lr0: 0.003}", "train.epochs=13", "rounds.max_rounds=5", "model.weights=other.pt"]
    overrides = ssl_gain.oracle_run(ssl_gain.Protocol(), 0, tmp_path, data, pool, init, 77, also)
    cfg = load_config(ssl_gain.DEMO, overrides)
    assert cfg.train.extra["lr0"] == 0.003  # what the SSL run (and its control) trained with
    assert (cfg.train.epochs, cfg.rounds.max_rounds) == (77, 0)  # its own budget, round 0 alone
    assert cfg.labeled.data == str(tmp_path / "data" / "data_oracle.yaml") and cfg.model.weights == str(init)
    assert cfg.output.dir == str(tmp_path / "0-oracle")


def test_run_one_exits_75_only_when_ray_timed_out_starting(monkeypatch):
    import ssl_ray.adapters.runtime

    def timed_out(**kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ssl_ray.adapters.runtime, "start_ray", timed_out)
    assert ssl_gain.run_one(["seed=0"]) == ssl_gain.RAY_DID_NOT_START == 75

    def broken(**kwargs):
        raise Exception("some other failure")

    monkeypatch.setattr(ssl_ray.adapters.runtime, "start_ray", broken)
    with pytest.raises(Exception, match="some other failure"):
        ssl_gain.run_one(["seed=0"])


@pytest.mark.parametrize(
    "ssl, control, oracle, expected",
    [
        (0.6, 0.5, 0.7, 0.5),
        (0.5, 0.5, 0.7, 0.0),
        (0.45, 0.5, 0.7, -0.25),  # worse than the labels alone
        (0.6, 0.5, 0.5, None),  # no gap to recover: no figure
    ],
)
def test_gap(ssl, control, oracle, expected):
    assert ssl_gain.gap(ssl, control, oracle) == expected


def test_spread():
    assert ssl_gain.spread([0.2, 0.4, None]) == {"mean": 0.3, "min": 0.2, "max": 0.4, "stdev": 0.141}
    assert ssl_gain.spread([None]) == {"mean": None}


def test_pseudo_quality_scores_kept_boxes_against_the_truth(tmp_path):
    import pyarrow.parquet as pq

    from ssl_ray.core.schema import box, make_row, rows_to_table

    truth = {"a" * 32: [box(0, 0.5, 0.5, 0.2, 0.2), box(1, 0.2, 0.2, 0.1, 0.1)], "b" * 32: [box(0, 0.5, 0.5, 0.4, 0.4)]}
    rows = [
        make_row(
            image_id="a" * 32,
            uri="a",
            width=100,
            height=100,
            source="pseudo",
            round=1,
            boxes=[box(0, 0.5, 0.5, 0.2, 0.2, 0.9), box(1, 0.8, 0.8, 0.1, 0.1, 0.8)],
        ),  # one hit, one miss
        make_row(image_id="b" * 32, uri="b", width=100, height=100, source="negative", round=1),  # an object missed
        make_row(
            image_id="c" * 32,
            uri="c",
            width=100,
            height=100,
            source="labeled",
            round=0,
            boxes=[box(0, 0.5, 0.5, 0.2, 0.2)],
        ),  # labeled rows are not scored
    ]
    pq.write_table(rows_to_table(rows), tmp_path / "merged.parquet")
    quality = ssl_gain.pseudo_quality(tmp_path / "merged.parquet", truth)
    assert quality == {"images": 2, "boxes": 2, "precision": 0.5, "recall": 0.333, "mean_iou": 1.0}


def test_step_seconds_reads_the_ssl_runs_own_training_folders(tmp_path):
    """The cache is shared by every run of a benchmark (seeds, variants): the cost per step
    is the SSL run's, found by the key `stages.train.work_dir` gives its folders."""
    from ssl_ray.config import load_config
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.train import work_dir

    cache = tmp_path / "cache"
    cfg = load_config(ssl_gain.DEMO, [f"output.cache_dir={cache}"])
    runs = {"0-ssl": (10.0, 20.0), "0-variant": (99.0, 99.0)}  # seconds of round 1 and its control
    for name, (r, c) in runs.items():
        for stage, seconds in (("r001", r), ("c001", c)):
            folder = work_dir(cfg, Store(str(tmp_path / name)), "train", stage) / "run"
            folder.mkdir(parents=True)
            (folder / "results.csv").write_text(f"epoch,time\n1,{seconds / 2}\n2,{seconds}\n")
    control = [{"round": 1, "round_iterations": 10, "iterations": 10}]
    found = ssl_gain.step_seconds(cache / "train", tmp_path / "0-ssl", control)
    assert found == {"ssl_round": 1.0, "control": 2.0, "ratio": 0.5}


@pytest.mark.parametrize(
    "overrides, own_control",
    [
        (["train.teacher_decay=0.95"], False),
        (["train.unsup_weight=0.5", "train.soft_min_score=null"], False),
        (["rounds.max_rounds=1", "train.epochs=39"], True),
        (["train.epochs=20"], True),
        (["train.epochs_per_round_typo=20"], False),  # a prefix is not the setting
    ],
)
def test_a_variant_that_reschedules_the_rounds_gets_its_own_control(overrides, own_control):
    assert ssl_gain.reschedules(overrides) is own_control


def test_the_labels_alone_are_scored_at_their_best_segment():
    def held_out(x):
        return {"held_out": {"mAP50-95": x, "mAP50": x + 0.2}}

    run = {"rounds": [held_out(0.45), held_out(0.60)], "control": [held_out(0.52), held_out(0.50)]}
    assert ssl_gain.best_alone(run) == {"mAP50-95": 0.52, "mAP50": 0.72}  # never the SSL round's 0.60
    assert ssl_gain.best_alone({"rounds": [held_out(0.45)], "control": []})["mAP50-95"] == 0.45
