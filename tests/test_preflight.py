"""What a user sees when a command cannot work: one `error:` line, exit 2, within seconds,
before any work, nothing written; and a corrected command that then just works."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "ssl_ray" / "configs" / "demo.yaml"


def cli(*args, cwd, timeout=300) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    return result, time.perf_counter() - start


def one_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    """A checkpoint of a model that predicts other classes than the labeled set's."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    root = tmp_path_factory.mktemp("other")
    ultralytics = prepare_ultralytics(root / "work")
    from ultralytics.nn.tasks import DetectionModel

    model = ultralytics.YOLO("yolo26n.yaml")
    model.model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    model.model.names = {0: "car", 1: "person"}
    model.save(str(root / "cars.pt"))
    (root / "notes.pt").write_text("not a checkpoint")
    return root


def base(shapes, tmp_path) -> list[str]:
    return [
        f"labeled.data={shapes}",
        f"pool.sources=[{shapes.parent / 'images' / 'pool'}]",
        f"output.dir={tmp_path / 'run'}",
        f"output.cache_dir={tmp_path / 'cache'}",
    ]


@pytest.mark.parametrize(
    "command, weights, expected",
    [
        ("run", "missing/best.pt", r"model.weights: missing/best.pt is not a file here, and ssl_ray downloads nothing"),
        ("run", "yolo26n.pt", r"model.weights: yolo26n.pt is not a file here"),  # a bare name: never downloaded
        ("run", "OTHER/notes.pt", r"model.weights: cannot load '.*notes.pt'"),
        ("label", "missing/best.pt", r"model.weights: missing/best.pt is not a file here"),
        (
            "label",
            "OTHER/cars.pt",
            r"model.weights: the teacher .*cars.pt predicts classes \['car', 'person'\], "
            r"but the labeled set has \['circle', 'square', 'triangle'\]",
        ),
        ("label", "yolo26n.yaml", r"predicts classes \['0', '1', '2'"),  # an untrained definition is no teacher
        ("train", "missing.pt", r"model.weights: missing.pt is not a file here"),
    ],
)
def test_weights_are_checked_before_any_work(shapes, tmp_path, other_teacher, command, weights, expected):
    import re

    weights = weights.replace("OTHER", str(other_teacher))
    result, seconds = cli(command, str(DEMO), *base(shapes, tmp_path), f"model.weights={weights}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.search(expected, one_error(result)), one_error(result)
    assert seconds < 60, seconds  # no Ray, no actors: the checkpoint alone is loaded
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_missing_labeled_data_yaml_leaves_no_run_directory(shapes, tmp_path):
    args = base(shapes, tmp_path)
    args[0] = f"labeled.data={tmp_path / 'nowhere' / 'data.yaml'}"
    result, _ = cli("run", str(DEMO), *args, cwd=tmp_path)
    assert result.returncode == 2 and one_error(result).startswith("error: labeled.data:")
    assert not (tmp_path / "run").exists()


@pytest.mark.ray
@pytest.mark.train
def test_after_a_refused_run_the_corrected_command_runs(shapes, tmp_path):
    refused, _ = cli("run", str(DEMO), *base(shapes, tmp_path), "model.weights=missing.pt", cwd=tmp_path)
    assert refused.returncode == 2
    tiny = ["model.imgsz=64", "train.epochs=1", "rounds.max_rounds=0", "ray.num_cpus=4"]
    result, _ = cli("run", str(DEMO), *base(shapes, tmp_path), *tiny, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "weights" / "best.pt").exists()
    lines = result.stdout.splitlines()
    assert lines[0] == f"run directory: {tmp_path / 'run'}" and lines[1].startswith("log: ")
    # the console carries the table and the progress lines; Ray's and Ultralytics' output is in the log
    noise = [
        line
        for line in result.stdout.splitlines() + result.stderr.splitlines()
        if "PlacementGroupCleaner" in line or "Traceback" in line
    ]
    assert not noise, noise[:5]
    assert any(line.startswith("train r000: epoch 1/1") for line in lines), result.stdout
    (log,) = (tmp_path / "run" / "logs").glob("run-*.log")
    assert "RayTrainWorker" in log.read_text() or "train" in log.read_text()


@pytest.mark.ray
@pytest.mark.train
def test_a_failure_inside_a_ray_worker_is_one_line_and_the_traceback_is_in_the_log(shapes, tmp_path):
    """Ultralytics refuses an argument inside the Ray Train worker: the user sees its cause."""
    args = [
        *base(shapes, tmp_path),
        "model.imgsz=64",
        "train.epochs=1",
        "train.max_failures=0",
        "ray.num_cpus=4",
        "train.extra={no_such_argument: 1}",
    ]
    result, _ = cli("train", str(DEMO), *args, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    error = one_error(result)
    assert "no_such_argument" in error and "full log:" in error, error
    assert len(result.stderr.splitlines()) <= 3, result.stderr[-3000:]
    log = Path(error.rsplit("full log: ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text()
