"""What every benchmark shares: the provenance of a figure, JSON output, a fresh local Ray,
the memory of Ray's processes, synthetic pools and teachers.

Provenance. Training is bit-for-bit deterministic for one seed, but only within one package
set and one CPU instruction set (AVX2 and AVX-512 kernels train to other weights;
docs/research/README.md). So a figure carries both:

- `cpu`: the model, the cores and the kernels torch picked (`ATEN_CPU_CAPABILITY` and
  `DNNL_MAX_CPU_ISA` pin them on any x86 machine with AVX2, as the environment shows);
- `packages`: the versions that move training, and whether the whole installed set is
  constraints.txt's (`make venv` installs exactly that), with what differs if not.

Run the benchmarks as modules from the project root: `.venv/bin/python -m bench.NAME ...`.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import json
import os
import platform
import re
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: a loopback-only local cluster
os.environ.setdefault("YOLO_OFFLINE", "1")

from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).parents[1] / "constraints.txt"
KEY_PACKAGES = ("torch", "torchvision", "ultralytics", "ray", "numpy", "opencv-python", "pillow", "pyarrow", "scipy")
CPU_VARIABLES = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")  # kernels and threads, when set

SOURCE_TEACHER = Path(__file__).parents[1] / "ssl_ray" / "assets" / "source-yolo26n.pt"  # the bundled one


def environment() -> dict:
    import torch

    installed = _installed()
    return {
        "python": platform.python_version(),
        "cpu": {
            "model": _cpu_model(),
            "cores": os.cpu_count(),
            "torch_kernels": torch.backends.cpu.get_cpu_capability(),
            **{name: os.environ[name] for name in CPU_VARIABLES if name in os.environ},
        },
        "packages": {name: installed.get(canonicalize_name(name)) for name in KEY_PACKAGES},
        "constraints": constraints_diff(installed, _read_constraints(CONSTRAINTS)),
    }


def constraints_diff(installed: dict[str, str], pinned: dict[str, str]) -> dict:
    """How the installed set differs from the pinned one: {"match": bool, "differ": {name: [pinned, installed]}}.
    Only pinned packages count: tools installed beside them (a profiler) change no figure."""
    differ = {
        name: [version, installed.get(name)]
        for name, version in sorted(pinned.items())
        if installed.get(name) != version
    }
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


def emit(figures: dict, path: str | None, hide: tuple[str, ...] = ()) -> None:
    """Print the figures (less the keys in `hide`) and write all of them, with the
    environment they were measured in, to `path` as JSON."""
    print(json.dumps({k: v for k, v in figures.items() if k not in hide}, indent=2))
    if path:
        Path(path).write_text(json.dumps({**figures, "environment": environment()}, indent=2) + "\n")


def fresh_cluster(num_cpus: int | None = 8) -> None:
    """Every measured run starts from the same state: a new local cluster, Ray Data warmed
    (its one-off first-use cost lands on no run)."""
    from ssl_ray.adapters.runtime import start_ray, stop_ray

    stop_ray()
    ray = start_ray(num_cpus=num_cpus, log_to_driver=False)
    ray.data.range(1).materialize()


class RayMemory:
    """Peak of the summed PSS of every Ray process (raylet, GCS, workers, actors), sampled;
    `largest`: the peak PSS of any one worker process; `largest_heap`: the peak of any one
    worker's anonymous memory (its heap: what a task holds, without the object-store pages it
    mapped, which its PSS also counts); `timeline` keeps every sample."""

    def __init__(self, period: float = 0.25):
        self.peak, self.largest, self.largest_heap = 0, 0, 0
        self.period, self._stop = period, threading.Event()
        self.timeline: list[tuple[float, int]] = []  # (perf_counter, summed PSS) per sample
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if self.is_ray(cmd):
                    rollup = self.rollup(p.pid)
                    if not rollup:
                        continue
                    total += rollup["Pss"]
                    if "ray::" in cmd or "default_worker" in cmd:
                        self.largest = max(self.largest, rollup["Pss"])
                        self.largest_heap = max(self.largest_heap, rollup.get("Pss_Anon", rollup["Pss"]))
            self.peak = max(self.peak, total)
            self.timeline.append((time.perf_counter(), total))
            self._stop.wait(self.period)

    @staticmethod
    def rollup(pid: int) -> dict[str, int]:
        """A process's /proc smaps totals in bytes (Pss, Pss_Anon, Pss_Shmem, ...); {} once gone."""
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return {}
        fields = (line.split() for line in lines)
        return {f[0].rstrip(":"): int(f[1]) * 1024 for f in fields if len(f) == 3 and f[2] == "kB"}

    @staticmethod
    def is_ray(cmd: str) -> bool:
        return "ray" in cmd and (
            "ray::" in cmd
            or "raylet" in cmd
            or "gcs_server" in cmd
            or "ray/_private" in cmd
            or "default_worker" in cmd
            or "dashboard" in cmd
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_pool(root: Path, n: int, imgsz: int) -> Path:
    """n synthetic pool images (the generator's own seeds), rendered in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    folder = root / "images" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [(folder, imgsz, range(i, min(i + 250, n))) for i in range(0, n, 250)]
    with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
        list(ex.map(_render_chunk, chunks))
    return folder


def _render_chunk(job) -> None:
    import numpy as np

    from ssl_ray.synth import SynthSpec, render

    folder, imgsz, indices = job
    spec = SynthSpec(n_train=1, n_val=1, n_pool=1, imgsz=imgsz, seed=7)
    for i in indices:
        image, _ = render(np.random.default_rng([spec.seed, 2, i]), spec)
        image.save(folder / f"pool_{i:06d}.jpg", quality=90)


def untrained_teacher(work: Path) -> str:
    """YOLO26n from Ultralytics' bundled yaml, saved as a .pt (the path real checkpoints take)."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    weights = str(work / "yolo26n.pt")
    prepare_ultralytics(work / "ul").YOLO("yolo26n.yaml").save(weights)
    return weights


@functools.lru_cache
def teacher_classes(weights: str) -> list[str]:
    """The teacher's classes, given to the stage as the rounds driver gives the labeled set's."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    # its settings in the bench cache, never beside the weights: they may be a bundled asset
    names = prepare_ultralytics(Path("~/.cache/ssl_ray/bench/ul")).YOLO(weights).names
    return [names[i] for i in sorted(names)]
