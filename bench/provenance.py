"""What a benchmark figure was measured on, written into its JSON.

Training here is bit-for-bit deterministic for one seed, but only within one package set and
one CPU instruction set: round 0 of bench/ssl_gain.py's seed 0 trains to the same weights on
every run, from d44da3b's code (the first recorded figures) as from today's, and to other
weights under AVX2 kernels instead of AVX-512 (docs/benchmarks.md, "Reproducing a figure").
So a figure carries both:

- `cpu`: the model, the cores and the kernels torch picked (`ATEN_CPU_CAPABILITY` and
  `DNNL_MAX_CPU_ISA` pin them on any x86 machine with AVX2, as the environment shows);
- `packages`: the versions that move training, and whether the whole installed set is
  constraints.txt's (`make venv` installs exactly that), with what differs if not.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
from pathlib import Path

from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).parents[1] / "constraints.txt"
KEY_PACKAGES = ("torch", "torchvision", "ultralytics", "ray", "numpy", "opencv-python", "pillow", "pyarrow", "scipy")
CPU_VARIABLES = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")  # kernels and threads, when set


def environment() -> dict:
    import torch

    installed = _installed()
    return {
        "python": platform.python_version(),
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count(),
                "torch_kernels": torch.backends.cpu.get_cpu_capability(),
                **{name: os.environ[name] for name in CPU_VARIABLES if name in os.environ}},
        "packages": {name: installed.get(canonicalize_name(name)) for name in KEY_PACKAGES},
        "constraints": constraints_diff(installed, _read_constraints(CONSTRAINTS)),
    }


def constraints_diff(installed: dict[str, str], pinned: dict[str, str]) -> dict:
    """How the installed set differs from the pinned one: {"match": bool, "differ": {name: [pinned, installed]}}.
    Only pinned packages count: tools installed beside them (a profiler) change no figure."""
    differ = {name: [version, installed.get(name)] for name, version in sorted(pinned.items())
              if installed.get(name) != version}
    return {"match": not differ and bool(pinned), "differ": differ}


def _read_constraints(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pins = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    pairs = (pin.partition("==") for pin in pins if "==" in pin)
    return {canonicalize_name(name): version for name, _, version in pairs}


def _installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None
