"""`vae-loadtest` / `python -m loadtest`: ghz's main flags and config files, and a few more.

Exit status: 0 when every call ended OK and every --slo was met; 1 when a call did not end OK or
an --slo was missed; 2 when the run could not be made (bad flags or config, unknown method,
no connection).
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.config import ConfigError, RunConfig, read_ghz_config, settings_from_ghz
from loadtest.descriptors import DescriptorError
from loadtest.engine import ConnectError
from loadtest.generator import WorkerError, run
from loadtest.slo import missed_slos, parse_slos

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The command line: ghz's flag names, every one optional over a --config file."""
    parser = argparse.ArgumentParser(
        prog="vae-loadtest",
        description="A gRPC load generator that reads ghz's config files and flags.",
        argument_default=None,
    )
    ghz = parser.add_argument_group("as in ghz (a flag replaces the --config file's value)")
    ghz.add_argument("host", nargs="?", help="host:port to load")
    ghz.add_argument("--config", help="ghz JSON config file")
    ghz.add_argument("--call", help="package.Service.Method or package.Service/Method")
    ghz.add_argument("--proto", help=".proto file (else the server's reflection is asked)")
    ghz.add_argument("-i", "--import-paths", help="comma-separated .proto import paths")
    ghz.add_argument("-d", "--data", help="call data as JSON: an object or an array of them")
    ghz.add_argument("-D", "--data-file", help="file holding the call data JSON")
    ghz.add_argument("-m", "--metadata", help="call metadata as a JSON object of strings")
    ghz.add_argument("-c", "--concurrency", type=int, help="workers / calls in flight (50)")
    ghz.add_argument("-n", "--total", type=int, help="calls to make (200)")
    ghz.add_argument("-z", "--duration", help="run for this long instead, e.g. 30s")
    ghz.add_argument(
        "--duration-stop",
        help="when -z is up, the calls in flight are: close = cut and counted as Unavailable "
        "(the default), wait = let finish, ignore = cut and left out",
    )
    ghz.add_argument("-t", "--timeout", help="deadline of each call (20s; 0: none)")
    ghz.add_argument("--connect-timeout", help="to connect (10s)")
    ghz.add_argument("-r", "--rps", type=float, help="arrivals per second: open loop, see below")
    ghz.add_argument(
        "--connections", type=int, help="connections to open (1); the -c workers take them in turn"
    )
    ghz.add_argument(
        "--insecure", action=argparse.BooleanOptionalAction, help="plaintext (--no-insecure: TLS)"
    )
    ghz.add_argument("--cacert", help="root certificates to verify the server with")
    ghz.add_argument("--cert", help="client certificate (with --key)")
    ghz.add_argument("--key", help="client private key (with --cert)")
    ghz.add_argument("--cname", help="server name to verify the certificate against")
    ghz.add_argument(
        "--stream-call-count",
        type=int,
        help="server streaming: cancel each stream after this many messages (counted Canceled)",
    )
    ghz.add_argument(
        "--stream-call-duration",
        help="server streaming: cancel each stream at its first message after this long",
    )
    ghz.add_argument(
        "--count-errors",
        action="store_true",
        default=None,
        help="latency statistics over every call, not only the OK ones",
    )
    ghz.add_argument("--name", help="a name for the run")
    ghz.add_argument("-O", "--format", choices=("summary", "json", "pretty"), default="summary")
    ghz.add_argument("-o", "--output", help="write the report here instead of stdout")
    ours = parser.add_argument_group("beyond ghz")
    ours.add_argument(
        "--procs", type=int, help="processes sending the load (1), sharing -c and --connections"
    )
    ours.add_argument(
        "--slo",
        help="objectives such as p99=50ms,p50=10ms,average=20ms; a miss exits with status 1",
    )
    parser.epilog = (
        "With --rps the load is open loop: call j is due at start + j/rps whatever the server "
        "does, at most -c in flight, and latency counts from the due time, so a stalled server "
        "shows in the tail."
    )
    return parser


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    ghz_keys: dict[str, Any] = {}
    for flag in ("host", "call", "proto", "concurrency", "total", "duration", "timeout", "rps"):
        ghz_keys[flag] = getattr(args, flag)
    ghz_keys.update(
        {
            "connect-timeout": args.connect_timeout,
            "duration-stop": args.duration_stop,
            "connections": args.connections,
            "insecure": args.insecure,
            "cacert": args.cacert,
            "cert": args.cert,
            "key": args.key,
            "cname": args.cname,
            "name": args.name,
            "data-file": args.data_file,
            "stream-call-count": args.stream_call_count,
            "stream-call-duration": args.stream_call_duration,
            "count-errors": args.count_errors,
            "import-paths": args.import_paths.split(",") if args.import_paths else None,
        }
    )
    for flag in ("data", "metadata"):
        text = getattr(args, flag)
        if text is not None:
            try:
                ghz_keys[flag] = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--{flag} is not JSON: {error}") from error
    settings = settings_from_ghz({k: v for k, v in ghz_keys.items() if v is not None})
    if args.procs is not None:
        settings["procs"] = args.procs
    if args.slo is not None:
        settings["slos"] = parse_slos(args.slo)
    return settings


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config: the --config file's settings, replaced by the flags given."""
    settings = read_ghz_config(args.config) if args.config else {}
    return RunConfig(**{**settings, **_flag_settings(args)})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load test as the flags say; print its report; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        report = run(config)
    except (ConfigError, DescriptorError, ConnectError, WorkerError) as error:
        print(f"vae-loadtest: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.format == "summary":
        text = report.summary_text()
    else:
        text = json.dumps(report.to_ghz_json(), indent=2 if args.format == "pretty" else None)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    failures = missed_slos(report)
    if report.not_ok_count:
        failures.insert(0, f"{report.not_ok_count} of {report.count} calls did not end OK")
    for failure in failures:
        print(f"vae-loadtest: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK
