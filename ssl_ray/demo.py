"""The bundled demo (`ssl-ray demo`, `make demo`): the benchmark's synthetic task, small, from
the bundled source-pretrained YOLO26n (`bench/ssl_gain.py` builds it), then the default: one
round of the online mode, set beside training as long on the labels alone.

Round 0 trains long enough to be a teacher that finds objects (0.44 mAP50-95 at 100 epochs, 0.24
at 30). Its round (156 steps over a pool of 200) is too short for a gain: it ends 0.01 mAP50-95
below its control (docs/research §5), and the benchmark is where the gain is measured."""

from __future__ import annotations

from pathlib import Path

from ssl_ray.config import Config, load_config

ASSETS = Path(__file__).parent / "assets"
INIT = ASSETS / "source-yolo26n.pt"
IMGSZ = 128
SPLITS = {"n_train": 40, "n_val": 64, "n_pool": 200}
SETTINGS = [
    f"model.weights={INIT}",
    f"model.imgsz={IMGSZ}",
    "train.round0_epochs=100",
    "train.epochs=12",
    "train.cpus_per_worker=2",
    "rounds.max_rounds=1",
    "rounds.conf_schedule=[]",
    "rounds.control=1",
]


def demo_config(out: Path) -> Config:
    """Generate the demo's dataset under `out/data` (seeded: the same files every time) and
    the config of its run at `out/run`."""
    from ssl_ray.synth import TASK, SynthSpec, generate

    data_yaml = generate(out / "data", SynthSpec(**SPLITS, imgsz=IMGSZ, **TASK))
    return load_config(
        Path(__file__).parent / "configs" / "demo.yaml",
        [
            f"labeled.data={data_yaml}",
            f"output.dir={out / 'run'}",
            f"output.cache_dir={out / 'cache'}",
            f"pool.sources=[{out / 'data' / 'images' / 'pool'}]",
            *SETTINGS,
        ],
    )
