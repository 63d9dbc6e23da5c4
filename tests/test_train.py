"""Training with Ray Train: real DDP over 2 CPU workers, checkpoints on storage, resume after
a worker dies. Tiny data (imgsz 64) keeps each run to seconds per epoch."""

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from ssl_ray.config import load_config
from ssl_ray.io.storage import Store

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
# nbs = total batch: one optimizer step per batch, so every epoch changes the weights.
TINY = [
    "model.imgsz=64",
    "train.num_workers=2",
    "train.batch=4",
    "train.cpus_per_worker=1",
    "train.extra={amp: false, nbs: 8, warmup_epochs: 0, mosaic: 0.0}",
]


def run_training(shapes, tmp_path, out_uri, extra=(), epochs=2, name="t", weights="yolo26n.yaml", online=False):
    """Train `name` on the shapes' labeled set; `online`: in online mode, its val images as
    the unlabeled pool and every teacher box reliable (an untrained teacher scores low)."""
    from ssl_ray.stages.ingest import ingest_labeled
    from ssl_ray.stages.train import TrainSpec, train_detector

    cfg = load_config(
        DEMO,
        [
            f"labeled.data={shapes}",
            f"output.dir={out_uri}",
            f"output.cache_dir={tmp_path / 'cache'}",
            f"train.epochs={epochs}",
            *TINY,
            *extra,
        ],
    )
    out = Store(cfg.output.dir, cfg.storage)
    labeled = ingest_labeled(cfg, out)
    spec = TrainSpec(
        name=name, train=["labeled/train.parquet"], val=["labeled/val.parquet"], names=labeled.names, weights=weights
    )
    if online:
        spec = dataclasses.replace(spec, unlabeled=["labeled/val.parquet"], class_conf=[0.0] * len(labeled.names))
    return cfg, out, train_detector(cfg, out, spec), labeled


def rank_logs(tmp_path, name="t", rank="*") -> list[Path]:
    """The per-rank audit files of training `name` (its cache folder is `<name>-<run key>`)."""
    return sorted((tmp_path / "cache" / "train").glob(f"{name}-*/run/ranks/rank{rank}.jsonl"))


def audit(tmp_path, name="t"):
    rows = []
    for f in rank_logs(tmp_path, name):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return rows


def check_ddp(records, n_train, epochs):
    by_epoch = {}
    for r in records:
        by_epoch.setdefault(r["epoch"], {})[r["rank"]] = r
    assert sorted(by_epoch) == list(range(1, epochs + 1))
    digests = []
    for epoch, ranks in by_epoch.items():
        assert sorted(ranks) == [0, 1]
        a, b = ranks[0], ranks[1]
        assert a["weights_digest"] == b["weights_digest"], f"epoch {epoch}: ranks disagree"  # DDP keeps them equal
        assert a["images_digest"] != b["images_digest"], f"epoch {epoch}: both ranks saw the same images"
        assert a["images"] == b["images"] < n_train  # its own share, padded to the longer one
        digests.append(a["weights_digest"])
    assert len(set(digests)) == len(digests), "weights did not change between epochs"


def check_shares(tmp_path, train_ids, name="t"):
    """Each rank trained on a tree of its own share: disjoint, together the whole set."""
    (work,) = (tmp_path / "cache" / "train").glob(f"{name}-*")
    ids = [
        {p.name.split(".")[0].split("~")[0] for p in (work / "data" / f"rank{r}" / "images" / "train").iterdir()}
        for r in (0, 1)
    ]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(train_ids)


def check_outputs(out: Store, names, tmp_path):
    from ssl_ray.adapters.runtime import prepare_ultralytics

    stage = out.child("train/t")
    metrics = json.loads(stage.read_bytes("train_metrics.json"))
    assert {"precision", "recall", "mAP50", "mAP50-95", "per_class"} <= set(metrics)
    assert set(metrics["per_class"]) <= set(names)
    checkpoints = [e.rel for e in stage.child("ray").list() if e.rel.endswith("last.pt")]
    assert checkpoints, "no checkpoint was reported to storage"
    ultralytics = prepare_ultralytics(tmp_path / "ul")
    local = tmp_path / "best.pt"
    local.write_bytes(stage.read_bytes("weights/best.pt"))
    model = ultralytics.YOLO(str(local))  # loadable with plain Ultralytics
    assert [model.names[i] for i in sorted(model.names)] == names


@pytest.mark.ray
@pytest.mark.train
def test_ddp_on_two_cpu_workers_local(ray_local, shapes, tmp_path):
    """Two ranks train in step, and a local run listens on loopback only: no rendezvous or
    gloo socket of the group on any other address (Ray's default TCPStore listens on all)."""
    from listening import ListenerWatch

    with ListenerWatch() as watch:
        _, out, metrics, labeled = run_training(shapes, tmp_path, str(tmp_path / "run"))
    assert watch.samples > 20 and watch.found == set(), watch.found
    check_ddp(audit(tmp_path), len(labeled.train), epochs=2)
    check_shares(tmp_path, [row["image_id"] for row in labeled.train])
    check_outputs(out, labeled.names, tmp_path)
    assert metrics["epochs"] == 2


@pytest.mark.ray
@pytest.mark.train
@pytest.mark.s3
def test_ddp_checkpoints_on_s3_warm_started_from_an_s3_checkpoint(
    ray_local, shapes, tmp_path, bucket, storage_cfg, teachers
):
    Store(f"s3://{bucket}/models", storage_cfg).write_bytes("start.pt", Path(teachers["yolo26n"]).read_bytes())
    extra = [f"storage.endpoint_url={storage_cfg.endpoint_url}", "storage.region=us-east-1"]
    _, out, _, labeled = run_training(
        shapes, tmp_path, f"s3://{bucket}/run", extra, weights=f"s3://{bucket}/models/start.pt"
    )
    check_ddp(audit(tmp_path), len(labeled.train), epochs=2)
    check_outputs(out, labeled.names, tmp_path)


@pytest.mark.ray
@pytest.mark.train
def test_online_mode_on_two_ranks_keeps_one_teacher(ray_local, shapes, tmp_path):
    """`train.ssl: online` over 2 DDP ranks: the students agree (DDP), and so do the teachers,
    updated after each step on every rank; each rank draws its own unlabeled images and the
    teacher's boxes reach the loss; best.pt (the teacher) loads in plain Ultralytics."""
    _, out, metrics, labeled = run_training(shapes, tmp_path, str(tmp_path / "run"), online=True)
    records = audit(tmp_path)
    check_ddp(records, len(labeled.train), epochs=2)
    by_epoch = {}
    for r in records:
        by_epoch.setdefault(r["epoch"], {})[r["rank"]] = r
    teachers = [ranks[0]["teacher_digest"] for ranks in by_epoch.values()]
    for epoch, ranks in by_epoch.items():
        assert ranks[0]["teacher_digest"] == ranks[1]["teacher_digest"], f"epoch {epoch}: teachers disagree"
        assert ranks[0]["teacher_digest"] != ranks[0]["weights_digest"]  # a moving average, not the student
        for r in ranks.values():
            assert r["pseudo_boxes_per_image"]["unlabeled_images"] > 0
            assert r["pseudo_boxes_per_image"]["reliable"] > 0
    assert len(set(teachers)) == len(teachers), "the teacher did not move"
    check_outputs(out, labeled.names, tmp_path)
    assert metrics["epochs"] == 2


@pytest.mark.ray
@pytest.mark.train
@pytest.mark.parametrize("online", [False, True], ids=["supervised", "online"])
def test_killed_worker_resumes_from_its_checkpoint(ray_local, shapes, tmp_path, online):
    """SIGKILL a training worker once Ray Train has registered epoch 1's checkpoint (its
    checkpoint manager's snapshot on storage names it): Ray restarts the group, which resumes
    from the last registered checkpoint. Epoch 1 is never trained again; only an epoch whose
    checkpoint was not registered when the worker died may be redone."""
    import psutil

    epochs = 4
    killed = []
    snapshot = tmp_path / "run" / "train" / "t" / "ray" / "t" / "checkpoint_manager_snapshot.json"

    def registered_epochs() -> list[int]:
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):
            return []
        return [r["metrics"].get("epoch", 0) for r in results]

    def kill_after_epoch_one_is_reported():
        deadline = time.time() + 300
        while time.time() < deadline:
            if 1 in registered_epochs() and rank_logs(tmp_path, rank=1):
                pid = json.loads(rank_logs(tmp_path, rank=1)[0].read_text().splitlines()[-1])["pid"]
                if psutil.pid_exists(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_epoch_one_is_reported)
    killer.start()
    _, _, metrics, labeled = run_training(shapes, tmp_path, str(tmp_path / "run"), epochs=epochs, online=online)
    killer.join()
    assert killed, "no worker was killed"
    rank0 = [r for r in audit(tmp_path) if r["rank"] == 0]
    pids = list(dict.fromkeys(r["pid"] for r in rank0))
    assert len(pids) == 2, "the group was not restarted"
    before = [r["epoch"] for r in rank0 if r["pid"] == pids[0]]
    after = [r["epoch"] for r in rank0 if r["pid"] == pids[1]]
    assert before == list(range(1, len(before) + 1))
    assert after == list(range(after[0], epochs + 1)), "the restarted group did not run to the end"
    assert 1 not in after, "epoch 1 was reported, yet the restarted group trained it again"
    assert after[0] in (before[-1], before[-1] + 1), "a reported epoch was trained again"
    assert metrics["epoch"] == epochs
    if online:  # the restarted group took student and teacher from online.pt, not from the fp16 EMA
        restarted = next(r for r in rank0 if r["pid"] == pids[1])
        assert restarted["resumed_after_epoch"] == after[0] - 1


def test_the_listener_watch_sees_a_socket_on_every_interface():
    import socket

    from listening import ListenerWatch

    with socket.socket(socket.AF_INET) as sock, ListenerWatch(period=0.05) as watch:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        time.sleep(0.3)
    assert ("0.0.0.0", port) in {(ip, port) for ip, port, _ in watch.found}


class _FakeParam:
    def __init__(self, device_type):
        self.device = type("Device", (), {"type": device_type})()


class _FakeModel:
    def __init__(self, device_type):
        self._param = _FakeParam(device_type)

    def parameters(self):
        return iter([self._param])


@pytest.mark.parametrize(
    "device, weights_local, calls_original, expected",
    [
        ("cpu", False, True, False),  # CPU: Ultralytics answers False at once, no download
        ("cuda", True, True, False),  # reference weights already local: the real check decides
        ("cuda", False, False, True),  # offline GPU node: no download attempt, AMP stays on
    ],
)
def test_amp_check_never_downloads(tmp_path, monkeypatch, device, weights_local, calls_original, expected):
    from ssl_ray.adapters.runtime import prepare_ultralytics

    prepare_ultralytics(tmp_path)
    import ultralytics.utils

    from ssl_ray.adapters.trainer import offline_check_amp

    monkeypatch.setattr(ultralytics.utils, "WEIGHTS_DIR", tmp_path)
    if weights_local:
        (tmp_path / "yolo26n.pt").write_bytes(b"x")
    called = []
    check = offline_check_amp(lambda model: called.append(model) or False)
    assert check(_FakeModel(device)) is expected
    assert bool(called) is calls_original


def test_runs_sharing_a_cache_never_share_a_training_folder(tmp_path):
    """Two runs with one output.cache_dir (the default is per user) both have a round r001:
    each trains on its own tree, and a re-run of a run finds its own folder again."""
    from ssl_ray.config import load_config
    from ssl_ray.stages.train import work_dir

    cfg = load_config(None, [f"output.cache_dir={tmp_path / 'cache'}"])
    a, b = Store(str(tmp_path / "run-a")), Store(str(tmp_path / "run-b"))
    assert work_dir(cfg, a, "train", "r001") != work_dir(cfg, b, "train", "r001")
    assert work_dir(cfg, a, "train", "r001") == work_dir(cfg, Store(str(tmp_path / "run-a")), "train", "r001")
    assert work_dir(cfg, a, "train", "r001") != work_dir(cfg, a, "eval", "r001")
    assert work_dir(cfg, a, "train", "r001").parent == tmp_path / "cache" / "train"
