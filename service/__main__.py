"""`python -m service` / `vae-serve`: serve the newest model version over gRPC."""

import asyncio
import sys
from collections.abc import Sequence

from service.config import ConfigError, load_config
from service.logging_setup import configure_logging
from service.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and `VAE_*` variables, then serve until SIGTERM; returns the exit status."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"vae-serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
