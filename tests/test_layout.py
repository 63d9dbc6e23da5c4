"""The package's layout by role holds: the pure core imports neither Ray, torch nor
Ultralytics (nor the I/O, stage or adapter layers), at module level or inside functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "ssl_ray"
HEAVY = ("ray", "torch", "torchvision", "ultralytics")
LAYERS = ("ssl_ray.io", "ssl_ray.stages", "ssl_ray.adapters", "ssl_ray.driver", "ssl_ray.cli", "ssl_ray.demo")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in (PACKAGE / "core").glob("*.py")))
def test_core_is_pure(module):
    found = imported(PACKAGE / "core" / module)
    heavy = sorted(n for n in found if n.split(".")[0] in HEAVY)
    above = sorted(n for n in found if n.startswith(LAYERS))
    assert not heavy and not above, f"ssl_ray/core/{module} imports {heavy + above}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    import torch.nn\n    from ray import data\n")
    assert imported(tmp_path / "m.py") == {"torch.nn", "ray"}


def test_io_touches_neither_ray_torch_nor_ultralytics():
    for path in (PACKAGE / "io").glob("*.py"):
        heavy = sorted(n for n in imported(path) if n.split(".")[0] in HEAVY)
        assert not heavy, f"{path.name} imports {heavy}"
