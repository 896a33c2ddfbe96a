"""Load testing for vae-serving: a ghz-compatible load generator and the ghz scenario files.

Library use (the benchmark's): `run(load_config(path, **overrides))` returns a `Report`.
"""

from loadtest.config import ConfigError, RunConfig, load_config
from loadtest.generator import run
from loadtest.report import Report

__all__ = ["ConfigError", "Report", "RunConfig", "load_config", "run"]
