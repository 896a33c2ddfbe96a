"""`make loadtest`: run every scenario file against a server and print each summary.

    python -m loadtest.scenarios [--target HOST:PORT] [--generator auto|ghz|ours] [-- FLAG...]

With `--generator auto` (the default) a `ghz` on PATH runs them, else this project's generator.
The target defaults to $VAE_TARGET, else 127.0.0.1:50051. Flags after `--` are handed to every
run, and both tools read them alike: `-- -n 200` for a short pass, `-- --proto
protos/vae/v1/vae.proto` to describe the calls from the file instead of by reflection (paths are
relative to the working directory: run from the repository root). Exits non-zero when any
scenario does.
"""

import argparse
import os
import shutil
import subprocess
import sys

from loadtest import cli
from loadtest.scenarios import scenario_files

DEFAULT_TARGET = "127.0.0.1:50051"


def main(argv: list[str] | None = None) -> int:
    """Run every scenario; return 0 when all of them passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("VAE_TARGET", DEFAULT_TARGET))
    parser.add_argument("--generator", choices=("auto", "ghz", "ours"), default="auto")
    parser.add_argument("extra", nargs="*", help="flags for every run, after --")
    args = parser.parse_args(argv)
    ghz = shutil.which("ghz") if args.generator in ("auto", "ghz") else None
    if args.generator == "ghz" and not ghz:
        parser.error("no ghz on PATH")
    failed = []
    for path in scenario_files():
        flags = ["--config", str(path), *args.extra, args.target]
        print(f"=== {path.stem}: {'ghz' if ghz else 'vae-loadtest'} {' '.join(flags)}", flush=True)
        if (subprocess.run([ghz, *flags]).returncode if ghz else cli.main(flags)) != 0:
            failed.append(path.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
