"""bench/ssl_gain.py's child runs: a local Ray that starts too slowly is retried, nothing else is."""

import json
from types import SimpleNamespace

import pytest

from bench import ssl_gain


def _children(monkeypatch, codes: list[int]) -> list[list[str]]:
    """Make each child run exit with the next of `codes`; returns the command lines run."""
    calls, codes = [], list(codes)

    def run(cmd, stdout, stderr):
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
        assert ssl_gain.execute(overrides, tmp_path / "logs" / "run.log") == []
    assert len(calls) == runs
    assert all(json.loads(c[-1]) == overrides for c in calls)


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
