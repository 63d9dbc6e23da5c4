"""The multi-round SSL job, for a cluster:

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m jobs.ssl_rounds --config jobs/configs/my.yaml [section.key=value ...]

Inside a job RAY_ADDRESS points at the cluster, which the driver joins. Re-submitting the same
command resumes an interrupted run. Same behaviour and exit codes as `ssl-ray run`.
`--synth DIR` first writes the bundled synthetic dataset to DIR (same bytes every time), for
smoke runs such as jobs/configs/smoke.yaml.
"""

import argparse
import sys

from ssl_ray.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m jobs.ssl_rounds")
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--new-run", action="store_true", help="replace an existing run at output.dir")
    parser.add_argument("--synth", metavar="DIR", help="write the synthetic dataset to DIR first")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    if args.synth:
        from ssl_ray.synth import SynthSpec, generate

        generate(args.synth, SynthSpec())
    sys.exit(main(["run", args.config, *args.overrides, *(["--new-run"] if args.new_run else [])]))
