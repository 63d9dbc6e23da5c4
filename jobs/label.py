"""Label the pool once, as a Ray job:

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.label --config jobs/configs/my.yaml [section.key=value ...]

Inside a job, RAY_ADDRESS points at the cluster, so the stage joins it instead of starting a
local one. Same behaviour and exit codes as `ssl-ray label`.
"""

import argparse
import sys

from ssl_ray.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m jobs.label")
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--round", default="1", help="round number to write")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    sys.exit(main(["label", args.config, *args.overrides, "--round", args.round]))
