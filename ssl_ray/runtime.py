"""The single place that prepares a process for Ultralytics and for Ray.

Nothing here runs at import. `prepare_ultralytics(work_dir)` must be called before the first
`import ultralytics` in a process (the adapters do it); `start_ray(cfg)` connects to a cluster
or starts a local one bound to 127.0.0.1 with token auth left on.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # else Ray resolves to the eth0 address


def prepare_ultralytics(work_dir: str | os.PathLike, threads: int | None = None):
    """Import Ultralytics offline-safe, its settings inside `work_dir`; return the module.

    - YOLO_OFFLINE=1: no network probes; YOLO_CONFIG_DIR=<work_dir>/ultralytics: its settings
      file and font cache live with the run, not in the user's home.
    - a local font as Arial.ttf, so plotting never tries to download one.
    - the raytune callback off (it must not report inside Ray Train).
    - torch's thread count restored (Ultralytics sets it to cores-1 on import).
    """
    import torch

    config_dir = Path(work_dir).expanduser() / "ultralytics"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    _install_font(config_dir)
    want = threads or torch.get_num_threads()

    import ultralytics
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("raytune", False) or SETTINGS.get("sync", False):
        SETTINGS.update({"raytune": False, "sync": False})
    torch.set_num_threads(want)
    return ultralytics


def _install_font(config_dir: Path) -> None:
    target = config_dir / "Arial.ttf"
    if target.exists():
        return
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(font, target)
        shutil.copyfile(font, config_dir / "Arial.Unicode.ttf")
    except OSError as e:  # plotting degrades; never fatal
        log.warning("no local font for Ultralytics plots: %s", e)


def start_ray(address: str | None = None, num_cpus: int | None = None, *, log_to_driver: bool = True):
    """Join `address` (or RAY_ADDRESS), else start a local cluster on 127.0.0.1.

    A local cluster keeps Ray's defaults, token auth included; give more logical CPUs than
    cores on small machines so an inference actor pool never starves the read tasks.
    """
    os.environ.update(_LOCAL_RAY_ENV)  # read by Ray at import: set it first
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        log.info("joined Ray cluster at %s", address)
        return ray
    ray.init(
        num_cpus=num_cpus or max(4, 2 * (os.cpu_count() or 1)),
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=log_to_driver,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return ray


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


class LazyRemote:
    """A Ray remote function defined on first use, so importing a module needs no Ray."""

    def __init__(self, fn, **opts):
        self.fn, self.opts, self._remote = fn, opts, None

    def _get(self):
        if self._remote is None:
            import ray

            self._remote = ray.remote(**self.opts)(self.fn) if self.opts else ray.remote(self.fn)
        return self._remote

    def remote(self, *args, **kwargs):
        return self._get().remote(*args, **kwargs)

    def options(self, **opts):
        return self._get().options(**opts)


def ray_get(refs):
    """`ray.get`, re-raising our own errors (bad input, storage) without Ray's wrapper, so the
    CLI can still print them as one line."""
    import ray

    from ssl_ray.errors import SslRayError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, SslRayError):
            raise e.cause from None
        raise
