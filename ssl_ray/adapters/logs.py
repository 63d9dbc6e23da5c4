"""Where a command's output goes: the console gets progress lines and the result; everything
else (Ray's and every worker's output, Ultralytics' per-batch lines, tracebacks) goes to a
log file whose path the command prints.

Workers write a progress line with `progress(...)`: it is printed with `PROGRESS_TAG`, and
`route_worker_logs` echoes exactly those lines of the workers' output to the console. Ray
delivers the workers' output to the driver through a handler of its own (the one
`ray.init(log_to_driver=True)` installs); it is replaced by one that writes to the file.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

PROGRESS_TAG = "[ssl_ray] "
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


def progress(message: str) -> None:
    """One progress line, from any process: on the console of the command that runs it."""
    print(f"{PROGRESS_TAG}{message}", flush=True)


class LogFile:
    """The command's log file: the driver's logging and the workers' output, timestamped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.handler: logging.Handler | None = None  # set by `capture_logging`

    def write_lines(self, lines, prefix: str = "") -> None:
        """Append worker lines; after `close`, they are dropped (Ray may deliver a few more)."""
        if self._file.closed:
            return
        stamp = time.strftime("%H:%M:%S")
        for line in lines:
            self._file.write(f"{stamp} {prefix}{line.rstrip()}\n")

    def close(self) -> None:
        if self.handler is not None:
            for logger in (logging.getLogger(), *(logging.getLogger(n) for n in RAY_LOGGERS)):
                logger.removeHandler(self.handler)
        self._file.close()


def capture_logging(log: LogFile) -> logging.Handler:
    """Every logger's records (ours, Ray's, Ultralytics' in this process, Python warnings)
    into the file; Ray's own loggers stop printing to the console."""
    handler = logging.StreamHandler(log._file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    logging.captureWarnings(True)
    _quiet_ray_data(log.path.parent)
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for other in list(logger.handlers):
            console = (
                getattr(other, "stream", None) in (sys.stderr, sys.stdout) or "PlainRayHandler" in type(other).__name__
            )
            if isinstance(other, logging.StreamHandler) and console:
                logger.removeHandler(other)
        logger.addHandler(handler)
        logger.propagate = False
    log.handler = handler
    return handler


_RAY_DATA_LOGGING = """version: 1
disable_existing_loggers: false
formatters: {ray: {format: "%(asctime)s %(levelname)s %(filename)s:%(lineno)s -- %(message)s"}}
handlers: {file: {class: ray.data._internal.logging.SessionFileHandler, formatter: ray, filename: ray-data.log}}
loggers: {ray.data: {level: INFO, handlers: [file], propagate: true}}
"""


def _quiet_ray_data(folder: Path) -> None:
    """Ray Data's logging as its default, less its console handler (its records still reach
    Ray's session log and, through the root logger, the command's log file)."""
    config = folder / "ray-data-logging.yaml"
    config.write_text(_RAY_DATA_LOGGING)
    import os

    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(config)
    if "ray.data" in sys.modules:  # configured at import already: again, from this config
        from ray.data._internal.logging import configure_logging

        configure_logging()


def route_worker_logs(log: LogFile) -> None:
    """After `ray.init(log_to_driver=True)`: the workers' output into the file, their
    progress lines (and nothing else) onto the console."""
    from ray._private import worker as ray_worker

    recent: list[str] = []  # a line can reach the driver twice (Ray Train repeats its workers'): shown once

    def handle(data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or f"pid={data.get('pid')}"
        lines = data.get("lines") or []
        log.write_lines(lines, prefix=f"({who}) ")
        for line in lines:
            at = line.find(PROGRESS_TAG)
            message = line[at + len(PROGRESS_TAG) :].rstrip() if at >= 0 else None
            if message is not None and message not in recent:
                recent[:] = [*recent[-19:], message]
                print(message, flush=True)

    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", handle)
