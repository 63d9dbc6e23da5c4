"""bench/provenance.py: what a figure was measured on, and how the environment differs from constraints.txt."""
import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("provenance", Path(__file__).parents[1] / "bench" / "provenance.py")
provenance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(provenance)


@pytest.mark.parametrize("installed, pinned, match, differ", [
    ({"numpy": "2.4.6"}, {"numpy": "2.4.6"}, True, {}),
    ({"numpy": "2.4.6", "py-spy": "0.4.3"}, {"numpy": "2.4.6"}, True, {}),       # unpinned tools do not count
    ({"numpy": "2.4.5"}, {"numpy": "2.4.6"}, False, {"numpy": ["2.4.6", "2.4.5"]}),
    ({}, {"numpy": "2.4.6"}, False, {"numpy": ["2.4.6", None]}),                 # pinned, not installed
    ({"numpy": "2.4.6"}, {}, False, {}),                                          # nothing pinned: no claim
])
def test_constraints_diff(installed, pinned, match, differ):
    assert provenance.constraints_diff(installed, pinned) == {"match": match, "differ": differ}


def test_read_constraints_skips_comments_and_normalizes_names(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# header\n\nopencv_python==5.0.0.93\nPyYAML==6.0.3  # trailing\nsome-tool>=1\n")
    assert provenance._read_constraints(path) == {"opencv-python": "5.0.0.93", "pyyaml": "6.0.3"}
    assert provenance._read_constraints(tmp_path / "missing.txt") == {}


def test_this_environment_is_the_pinned_one():
    """make venv installs constraints.txt exactly: an environment that drifted from it would
    train to other weights than the recorded figures (docs/benchmarks.md, "Reproducing a figure")."""
    env = provenance.environment()
    assert env["constraints"] == {"match": True, "differ": {}}, env["constraints"]
    assert env["packages"]["torch"] == "2.14.1" and env["cpu"]["cores"] and env["python"] == sys.version.split()[0]
