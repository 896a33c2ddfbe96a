"""Configuration: flags beat VAE_* variables beat defaults; bad values are named."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import (
    GRPC_ENVIRONMENT,
    Config,
    ConfigError,
    available_cpus,
    load_config,
    set_grpc_environment,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_defaults() -> dict[str, str]:
    """The README's configuration table: each setting's field name and its default's text."""
    rows = re.findall(r"^\| `VAE_(\w+)` \| `--[\w-]+` \| ([^|]+) \|", README.read_text(), re.M)
    return {name.lower(): default.strip() for name, default in rows}


def test_the_readme_documents_every_setting_with_the_default_in_force() -> None:
    documented = documented_defaults()
    config = load_config([], {})
    assert set(documented) == {field.name for field in dataclasses.fields(Config)}
    for name, text in documented.items():
        value = getattr(config, name)
        if name == "workers":
            assert (text, value) == ("CPUs available", available_cpus())
        elif name == "intra_op_threads":
            expected = max(1, available_cpus() // config.workers)
            assert (text, value) == ("CPUs available ÷ workers", expected)
        elif value is None:
            assert text == "—", name
        elif isinstance(value, bool):
            assert text == str(value).lower(), name
        elif isinstance(value, int | float):
            assert float(text.split(" (")[0]) == value, name  # "33554432 (32 MiB)"
        else:
            assert text == str(value), name
    assert config.tls is False
    assert config.max_queue >= config.max_request_rows


def test_environment_variables_set_every_field_and_flags_win() -> None:
    environ = {
        "VAE_GRPC_PORT": "6000", "VAE_MAX_BATCH_SIZE": "32", "VAE_MAX_DELAY_MS": "0.5",
        "VAE_REFLECTION": "false", "VAE_LOG_LEVEL": "debug", "VAE_MODEL_DIR": "/m",
        "VAE_INTRA_OP_THREADS": "3",
    }
    config = load_config(["--grpc-port", "7000", "--log-format", "json"], environ)
    assert config.grpc_port == 7000
    assert config.log_format == "json"
    assert config.max_batch_size == 32 and config.max_delay_ms == 0.5
    assert config.reflection is False and config.log_level == "DEBUG"
    assert config.model_dir == Path("/m") and config.intra_op_threads == 3


def test_intra_op_threads_zero_means_the_cpus_available_divided_among_the_workers() -> None:
    one = load_config([], {"VAE_INTRA_OP_THREADS": "0", "VAE_WORKERS": "1"})
    assert one.intra_op_threads == available_cpus()
    assert load_config(["--workers", "0"], {}).workers == available_cpus()
    many = load_config(["--workers", str(2 * available_cpus())], {})
    assert many.intra_op_threads == 1  # never 0, however many workers share the CPUs


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"VAE_GRPC_PORT": "http"}, "VAE_GRPC_PORT"),
        ({"VAE_GRPC_PORT": "70000"}, "VAE_GRPC_PORT"),
        ({"VAE_MAX_BATCH_SIZE": "0"}, "VAE_MAX_BATCH_SIZE"),
        ({"VAE_WORKERS": "-1"}, "VAE_WORKERS"),
        ({"VAE_MAX_DELAY_MS": "-1"}, "VAE_MAX_DELAY_MS"),
        ({"VAE_GRACE_SECONDS": "nan"}, "VAE_GRACE_SECONDS"),
        ({"VAE_REFLECTION": "maybe"}, "VAE_REFLECTION"),
        ({"VAE_LOG_FORMAT": "xml"}, "VAE_LOG_FORMAT"),
        ({"VAE_MAX_QUEUE": "100"}, "VAE_MAX_QUEUE"),
        ({"VAE_MAX_MESSAGE_BYTES": "1000000"}, "VAE_MAX_MESSAGE_BYTES"),
        ({"VAE_MAX_STREAM_ROWS": "1000000"}, "VAE_MAX_STREAM_ROWS"),
        ({"VAE_MAX_STREAM_ROWS": str(2**64)}, "VAE_MAX_STREAM_ROWS"),
        ({"VAE_MAX_CHUNK_ROWS": "0"}, "VAE_MAX_CHUNK_ROWS"),
        ({"VAE_MAX_CHUNK_ROWS": "20000"}, "VAE_MAX_CHUNK_ROWS"),
        ({"VAE_MAX_STREAMS": "0"}, "VAE_MAX_STREAMS"),
        ({"VAE_MAX_STREAMS": "32"}, "VAE_MAX_STREAMS"),
        ({"VAE_MAX_STREAMS": "8", "VAE_HANDLER_THREADS": "8"}, "VAE_HANDLER_THREADS"),
        ({"VAE_TLS_CERT_FILE": "/c.pem"}, "VAE_TLS_KEY_FILE"),
        ({"VAE_TLS_CLIENT_CA_FILE": "/ca.pem"}, "VAE_TLS_CERT_FILE"),
    ],
)
def test_invalid_settings_are_refused_naming_the_variable(environ, named) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config([], environ)


def test_the_config_object_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.grpc_port = 1  # type: ignore[misc]


def test_a_bad_setting_stops_the_server_with_exit_2_and_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--max-batch-size", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "vae-serve: VAE_MAX_BATCH_SIZE must be at least 1"


def test_help_lists_every_flag_with_its_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name in Config.__dataclass_fields__:
        assert f"--{name.replace('_', '-')} VAE_{name.upper()}" in result.stdout


def test_grpc_gets_the_service_transport_defaults_where_the_operator_set_none() -> None:
    environ: dict[str, str] = {"PATH": "/bin"}
    assert set_grpc_environment(environ) == {"GRPC_EXPERIMENTS": "-event_engine_listener"}
    assert environ == {"PATH": "/bin", **GRPC_ENVIRONMENT}
    chosen = {"GRPC_EXPERIMENTS": ""}  # gRPC's own defaults
    assert set_grpc_environment(chosen) == {"GRPC_EXPERIMENTS": ""} == chosen


def test_the_entry_point_sets_grpc_environment_before_grpc_loads() -> None:
    # gRPC reads GRPC_EXPERIMENTS once, when it loads: importing the entry point must not load it.
    code = "import sys, service.__main__; print('grpc' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_the_start_up_line_names_the_grpc_settings_in_force(start_vae_server) -> None:
    default = start_vae_server()
    chosen = start_vae_server(GRPC_EXPERIMENTS="")
    assert default.wait_for_log("serving")["grpc_environment"] == GRPC_ENVIRONMENT
    assert chosen.wait_for_log("serving")["grpc_environment"] == {"GRPC_EXPERIMENTS": ""}
