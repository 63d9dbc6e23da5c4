"""bench/common.py: what a figure was measured on, and how the environment differs from constraints.txt."""

import pytest

from bench import common as provenance


@pytest.mark.parametrize(
    "installed, pinned, match, differ",
    [
        ({"numpy": "2.4.6"}, {"numpy": "2.4.6"}, True, {}),
        ({"numpy": "2.4.6", "py-spy": "0.4.3"}, {"numpy": "2.4.6"}, True, {}),  # unpinned tools do not count
        ({"numpy": "2.4.5"}, {"numpy": "2.4.6"}, False, {"numpy": ["2.4.6", "2.4.5"]}),
        ({}, {"numpy": "2.4.6"}, False, {"numpy": ["2.4.6", None]}),  # pinned, not installed
        ({"numpy": "2.4.6"}, {}, False, {}),  # nothing pinned: no claim
    ],
)
def test_constraints_diff(installed, pinned, match, differ):
    assert provenance.constraints_diff(installed, pinned) == {"match": match, "differ": differ}


def test_read_constraints_skips_comments_and_normalizes_names(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# header\n\nopencv_python==5.0.0.93\nPyYAML==6.0.3  # trailing\nsome-tool>=1\n")
    assert provenance._read_constraints(path) == {"opencv-python": "5.0.0.93", "pyyaml": "6.0.3"}
    assert provenance._read_constraints(tmp_path / "missing.txt") == {}


def test_ray_memory_reads_a_process_heap_apart_from_its_pss():
    import os

    from bench.common import RayMemory

    mine = RayMemory.rollup(os.getpid())
    assert 0 < mine["Pss_Anon"] <= mine["Pss"]  # the heap is a part of the PSS
    assert RayMemory.rollup(2**22 + 1) == {}  # no such process: nothing, not an error
