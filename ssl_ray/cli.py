"""`ssl-ray` command line. Each command: load config -> preflight -> one stage -> summary.

Failures the user can fix (`SslRayError`: bad config, data, weights, storage) print one
`error: ...` line and exit 2, before any work. Anything else that fails, in this process or in
a Ray worker, prints its one-line cause and exits 1; the traceback goes to the log.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from ssl_ray.config import Config, dump_config, load_config
from ssl_ray.console import print_label_summary, print_train_metrics, table
from ssl_ray.errors import SslRayError

log = logging.getLogger("ssl_ray")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _console_logging(args.verbose)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place every failure becomes one line
        from ssl_ray.adapters.runtime import root_cause

        cause = root_cause(e)
        if isinstance(cause, SslRayError):
            print(f"error: {cause}", file=sys.stderr)
            return 2
        log.debug("failure", exc_info=e)
        where = getattr(args, "log_file", None)
        print(
            f"error: {type(cause).__name__}: {_first_line(cause)}" + (f" (full log: {where})" if where else ""),
            file=sys.stderr,
        )
        return 1


def _console_logging(verbose: bool) -> None:
    """The console shows ssl_ray's own log records (warnings; with -v, progress too); a
    command that starts Ray sends every other record to its log file (`adapters.logs`)."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.addFilter(lambda record: record.name == "ssl_ray" or record.name.startswith("ssl_ray."))
    logging.getLogger().addHandler(console)
    logging.getLogger("ssl_ray").setLevel(logging.INFO if verbose else logging.WARNING)


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no message)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssl-ray", description="Semi-supervised object detection on Ray.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def with_config(cmd, func, help_):
        sp = sub.add_parser(cmd, help=help_)
        sp.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
        sp.add_argument("overrides", nargs="*", help="section.key=value overrides")
        sp.set_defaults(func=func)
        return sp

    cfg = sub.add_parser("config", help="show the effective config or the reference of all settings")
    cfg_sub = cfg.add_subparsers(required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the effective config as YAML")
    show.add_argument("config", nargs="?")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(func=cmd_config_show)
    ref = cfg_sub.add_parser("reference", help="print every setting with type, default and help (Markdown)")
    ref.set_defaults(func=cmd_config_reference)

    synth = sub.add_parser("synth", help="generate the seeded synthetic shapes dataset")
    synth.add_argument("out")
    for name, default in (
        ("n-train", 40),
        ("n-val", 32),
        ("n-pool", 200),
        ("imgsz", 160),
        ("n-classes", 3),
        ("seed", 0),
    ):
        synth.add_argument(f"--{name}", type=int, default=default)
    synth.set_defaults(func=cmd_synth)

    with_config("ingest", cmd_ingest, "read the labeled set into Parquet under <output.dir>/labeled")
    label = with_config("label", cmd_label, "pseudo-label the pool once (one round's label stage)")
    label.add_argument("--round", type=int, default=1, help="round number to write (default 1)")
    label.add_argument("--weights", help="teacher checkpoint (default: model.weights)")
    label.add_argument("--redo", action="store_true", help="redo a round labeled with other settings")

    train = with_config("train", cmd_train, "train the detector on the labeled set with Ray Train")
    train.add_argument("--name", default="labeled", help="training run name (resume key; output train/<name>)")

    run = with_config("run", cmd_run, "the multi-round SSL job (resumes an interrupted run)")
    run.add_argument("--new-run", action="store_true", help="replace an existing run at output.dir")

    demo = sub.add_parser("demo", help="the bundled demo on local Ray and local disk")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--new-run", action="store_true", help="replace a demo run made with other settings")
    demo.set_defaults(func=cmd_demo)
    return p


def _load(args) -> Config:
    """CONFIG is optional: '-' or a first argument that is an override means defaults."""
    path, overrides = args.config, list(args.overrides)
    if path == "-":
        path = None
    elif path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]
    return load_config(path, overrides)


def cmd_config_show(args) -> None:
    print(dump_config(_load(args)), end="")


def cmd_config_reference(args) -> None:
    from ssl_ray.typed import field_docs

    print("| setting | type | default | meaning |\n|---|---|---|---|")
    for name, tp, default, doc, operational in field_docs(Config):
        print(f"| `{name}`{' (o)' if operational else ''} | {tp} | `{default!r}` | {doc} |")


def cmd_synth(args) -> None:
    from ssl_ray.synth import SynthSpec, generate

    spec = SynthSpec(
        n_train=args.n_train,
        n_val=args.n_val,
        n_pool=args.n_pool,
        imgsz=args.imgsz,
        n_classes=args.n_classes,
        seed=args.seed,
    )
    print(generate(args.out, spec))


def cmd_ingest(args) -> None:
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.ingest import ingest_labeled

    cfg = _load(args)
    preflight_locations(cfg, labeled=True)
    start = time.perf_counter()
    out = Store(cfg.output.dir, cfg.storage)
    result = ingest_labeled(cfg, out)
    table(
        ["split", "images", "boxes"],
        [
            ["train", len(result.train), sum(len(r["boxes"]) for r in result.train)],
            ["val", len(result.val), sum(len(r["boxes"]) for r in result.val)],
        ],
    )
    print(
        f"classes: {', '.join(result.names)}; skipped: {result.rejects}; "
        f"{time.perf_counter() - start:.1f}s -> {out.uri_of('labeled')}"
    )


def cmd_label(args) -> None:
    from ssl_ray.adapters.runtime import start_ray_for
    from ssl_ray.adapters.teacher import preflight_weights
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.label import label_pool

    cfg = _load(args)
    if not cfg.pool.sources:
        raise SslRayError("pool.sources: give at least one local directory or s3:// prefix")
    names = preflight_locations(cfg, labeled=bool(cfg.labeled.data), pool=True)
    weights = args.weights or cfg.model.weights
    teacher_names = preflight_weights(cfg, weights, names, role="teacher")
    out = Store(cfg.output.dir, cfg.storage)
    with command_log(args, cfg, "label") as logfile:
        start_ray_for(cfg, logfile)
        summary = label_pool(cfg, out, round=args.round, weights=weights, names=names or teacher_names, redo=args.redo)
    print_label_summary(summary)
    print(f"-> {out.uri_of(f'rounds/r{args.round:03d}')}")


def cmd_run(args) -> None:
    run_job(_load(args), new_run=args.new_run, args=args)


def run_job(cfg: Config, *, new_run: bool = False, args=None) -> None:
    """Preflight, local or joined Ray, the rounds; prints the table as rounds finish."""
    from ssl_ray.adapters.runtime import start_ray_for
    from ssl_ray.adapters.teacher import preflight_weights
    from ssl_ray.core.rounds import best_round, eta_seconds
    from ssl_ray.driver import run_rounds
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.report import COLUMNS, columns, table_rows, verdict

    if not cfg.labeled.data or not cfg.pool.sources:
        raise SslRayError("labeled.data and pool.sources are both required for a run")
    names = preflight_locations(cfg, labeled=True, pool=True)
    preflight_weights(cfg, cfg.model.weights, names, role="teacher" if cfg.rounds.round0 == "evaluate" else "init")
    out = Store(cfg.output.dir, cfg.storage)
    print(f"run directory: {out.uri}", flush=True)
    if (
        not out.is_s3
        and not Path(cfg.output.dir).expanduser().is_absolute()
        and (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    ):
        log.warning(
            "output.dir %r is relative: on a cluster it lands in the job's working directory on the "
            "head node, which is not durable; use s3://bucket/prefix",
            cfg.output.dir,
        )
    start = time.perf_counter()

    def progress(state) -> None:
        elapsed = time.perf_counter() - start
        print()
        table(COLUMNS, table_rows(state.rounds))
        eta = eta_seconds(state.rounds, cfg.rounds.max_rounds, control=cfg.rounds.control)
        when = (
            f"about {eta / 60:.1f} min to go (later rounds take about as long as the last)"
            if eta is not None
            else "an estimate follows round 1 (rounds 1.. also learn from the pool)"
        )
        print(f"round {state.rounds[-1]['round']} done: {elapsed / 60:.1f} min elapsed, {when}", flush=True)

    with command_log(args, cfg, "run") as logfile:
        start_ray_for(cfg, logfile)
        state = run_rounds(cfg, new_run=new_run, on_round=progress)
    if state.control:
        print()
        table(columns(state.control), table_rows(state.rounds, state.control))
        print("\n".join(["", *verdict(state.rounds, state.control)]))
    print(
        f"\nbest round: {best_round(state.scores)}; weights {out.uri_of('final/weights/best.pt')}; "
        f"report {out.uri_of('report/report.md')}"
    )


@contextlib.contextmanager
def command_log(args, cfg: Config, command: str):
    """The command's log file (`adapters.logs.LogFile`): written on this node under
    output.cache_dir, copied into `<output.dir>/logs/` when the command ends and a run
    directory exists (a run that was refused or cleaned up gets none)."""
    from ssl_ray.adapters.logs import LogFile
    from ssl_ray.io.storage import Store

    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log"
    local = Path(cfg.output.cache_dir).expanduser().resolve() / "logs" / name
    logfile = LogFile(local)
    if args is not None:
        args.log_file = str(local)
    print(f"log: {local}", flush=True)
    try:
        yield logfile
    finally:
        logfile.close()
        out = Store(cfg.output.dir, cfg.storage)
        try:
            if out.exists():
                out.write_bytes(f"logs/{name}", local.read_bytes())
                if args is not None:
                    args.log_file = out.uri_of(f"logs/{name}")
        except SslRayError as e:  # the log stays where it is
            log.warning("the log stays at %s: %s", local, e)


def preflight_locations(cfg: Config, *, labeled: bool = False, pool: bool = False) -> list[str] | None:
    """Before any work: every location answers (output.dir is writable, nothing is created
    there yet) and the labeled data.yaml parses; its class names. Each failure is one error
    naming the setting."""
    from ssl_ray.io.dataset import load_data_yaml
    from ssl_ray.io.storage import Store, preflight

    checks = [("labeled.data", cfg.labeled.data.rpartition("/")[0] or ".", False)] if labeled else []
    checks += [(f"pool.sources[{i}]", source, False) for i, source in enumerate(cfg.pool.sources if pool else [])]
    checks += [("output.dir", cfg.output.dir, True)]
    for name, uri, write in checks:
        try:
            preflight(uri, cfg.storage, write=write)
        except SslRayError as e:
            raise type(e)(f"{name}: {e}") from None
    if not labeled:
        return None
    return load_data_yaml(cfg.labeled.data, lambda uri: Store(uri, cfg.storage)).names


def cmd_train(args) -> None:
    from ssl_ray.adapters.runtime import start_ray_for
    from ssl_ray.adapters.teacher import preflight_weights
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.ingest import ingest_labeled
    from ssl_ray.stages.train import TrainSpec, train_detector

    cfg = _load(args)
    names = preflight_locations(cfg, labeled=True)
    preflight_weights(cfg, cfg.model.weights, names, role="init")
    out = Store(cfg.output.dir, cfg.storage)
    labeled = ingest_labeled(cfg, out)
    spec = TrainSpec(
        name=args.name,
        train=["labeled/train.parquet"],
        val=["labeled/val.parquet"],
        names=labeled.names,
        weights=cfg.model.weights,
    )
    with command_log(args, cfg, "train") as logfile:
        start_ray_for(cfg, logfile)
        metrics = train_detector(cfg, out, spec)
    print_train_metrics(metrics)
    print(f"-> {out.uri_of(f'train/{args.name}/weights/best.pt')}")


def cmd_demo(args) -> None:
    """The bundled demo: the synthetic dataset, then the real multi-round job on local Ray."""
    from ssl_ray.demo import demo_config

    run_job(demo_config(Path(args.out).resolve()), new_run=args.new_run, args=args)


if __name__ == "__main__":
    sys.exit(main())
