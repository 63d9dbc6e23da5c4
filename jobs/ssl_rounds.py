"""The multi-round SSL job, for a cluster:

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m jobs.ssl_rounds --config jobs/configs/my.yaml [section.key=value ...]

Inside a job RAY_ADDRESS points at the cluster, which the driver joins. Re-submitting the same
command resumes an interrupted run. Same behaviour and exit codes as `ssl-ray run`.
"""

import argparse
import sys

from ssl_ray.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m jobs.ssl_rounds")
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--new-run", action="store_true", help="replace an existing run at output.dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    sys.exit(main(["run", args.config, *args.overrides, *(["--new-run"] if args.new_run else [])]))
