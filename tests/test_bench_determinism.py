"""bench/determinism.py: where two runs' results.csv rows part."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("determinism", Path(__file__).parents[1] / "bench" / "determinism.py")
determinism = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(determinism)


def _rows(*losses: str, times=None) -> list[dict]:
    return [{"epoch": str(i + 1), "time": str(times[i] if times else i), "train/box_loss": loss}
            for i, loss in enumerate(losses)]


@pytest.mark.parametrize("rows, reference, first", [
    (_rows("3.1", "2.9"), _rows("3.1", "2.9"), None),
    (_rows("3.1", "2.9", times=[5, 9]), _rows("3.1", "2.9"), None),  # wall time never counts
    (_rows("3.1", "2.8"), _rows("3.1", "2.9"), 2),
    (_rows("3.0", "2.9"), _rows("3.1", "2.9"), 1),
    (_rows("3.1"), _rows("3.1", "2.9"), 2),                            # one run stopped early
    (_rows("3.1", "2.9", "2.7"), _rows("3.1", "2.9"), 3),
])
def test_first_difference(rows, reference, first):
    assert determinism.first_difference(rows, reference) == first
