"""`python -m service` / `vae-serve`: serve the newest model version over gRPC.

With one worker (`VAE_WORKERS=1`) this process is the server; with more it is their supervisor
(service.supervisor), and imports neither gRPC nor onnxruntime.
"""

import ctypes
import ctypes.util
import sys
from collections.abc import Sequence

from service.config import ConfigError, load_config, set_grpc_environment
from service.logging_setup import configure_logging

# mallopt parameters (glibc's malloc.h) and the values used.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_ARENAS = 4
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for this setting on 64-bit
_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_freed_memory() -> None:
    """Make glibc reuse freed memory instead of returning it to the kernel, in few arenas.

    By default glibc hands blocks of more than a few hundred kilobytes straight back to the
    kernel when freed, so each large response is written into fresh pages that fault in one by
    one: for a response of 1024 images that cost more than the inference itself. Kept, the
    memory levels off at the peak a process needs. Other C libraries are left alone.

    glibc also gives threads arenas of their own, up to eight per core, and each keeps the
    peak of the responses built in it: with gRPC's handler threads that multiplies the memory a
    server holds (make bench's thread-pool floors, which leave this alone, show how much). Four
    arenas bound it; fewer slowed the largest requests down.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
        libc.mallopt(_M_ARENA_MAX, _ARENAS)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and `VAE_*` variables, then serve until SIGTERM; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"vae-serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)
    if config.workers > 1:
        from service.supervisor import supervise

        return supervise(config, argv)
    keep_freed_memory()
    grpc_environment = set_grpc_environment()
    # Imported only now: gRPC reads its environment once, when it loads.
    from service.server import serve

    return serve(config, grpc_environment)


if __name__ == "__main__":
    sys.exit(main())
