"""Reading ghz's config format and flags into one RunConfig."""

import json

import pytest

from loadtest.cli import EXIT_UNUSABLE, build_parser, config_from_args, main
from loadtest.config import ConfigError, load_config, parse_duration_s
from loadtest.slo import parse_slos


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("250ms", 0.25), ("1m30s", 90), ("1.5s", 1.5), ("20us", 2e-5), ("0", 0)],
)
def test_go_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "ten seconds", "10 s", "s", "1h-5m"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration_s(text)


def write_config(tmp_path, **settings) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"call": "vae.v1.VAEService.Sample", "host": "h:1", **settings}))
    return str(path)


def test_a_ghz_config_file_is_read_with_ghz_names(tmp_path) -> None:
    path = write_config(
        tmp_path,
        **{"concurrency": 8, "total": 100, "timeout": "3s", "import-paths": ["protos"]},
        **{"insecure": True, "data": [{"count": 1}, {"count": 2}], "metadata": {"k": "v"}},
    )
    config = load_config(path)
    assert (config.concurrency, config.total, config.timeout_s) == (8, 100, 3.0)
    assert config.import_paths == ("protos",)
    assert config.insecure
    assert config.data == ({"count": 1}, {"count": 2})
    assert config.metadata == (("k", "v"),)


def test_flags_replace_the_config_files_values(tmp_path) -> None:
    path = write_config(tmp_path, concurrency=8, total=100, data={"count": 1})
    flags = ["--config", path, "-n", "7", "-z", "2s", "-d", '{"count": 3}', "other:2"]
    config = config_from_args(build_parser().parse_args(flags))
    assert (config.host, config.total, config.duration_s) == ("other:2", 7, 2.0)
    assert config.concurrency == 8
    assert config.data == ({"count": 3},)


def test_duration_stop_is_read_as_ghz_reads_it(tmp_path) -> None:
    # ghz's default is "close"; it takes the value in any case.
    assert load_config(write_config(tmp_path, duration="1s")).duration_stop == "close"
    path = write_config(tmp_path, **{"duration": "1s", "duration-stop": "WAIT"})
    assert load_config(path).duration_stop == "wait"
    flags = ["--config", path, "--duration-stop", "ignore"]
    assert config_from_args(build_parser().parse_args(flags)).duration_stop == "ignore"


def test_an_unknown_duration_stop_flag_cannot_run(tmp_path, capsys) -> None:
    path = write_config(tmp_path, duration="1s")
    assert main(["--config", path, "--duration-stop", "later"]) == EXIT_UNUSABLE
    assert "duration-stop must be one of close, wait, ignore" in capsys.readouterr().err


def test_ghzs_stream_settings_are_read_from_the_file_and_the_flags(tmp_path) -> None:
    path = write_config(
        tmp_path,
        **{"stream-call-count": 3, "stream-call-duration": "500ms", "count-errors": True},
        **{"stream-dynamic-messages": True},  # changes client streams only: none are sent
    )
    config = load_config(path)
    assert (config.stream_call_count, config.stream_call_duration_s) == (3, 0.5)
    assert config.count_errors
    flags = ["--config", write_config(tmp_path), "--stream-call-count", "2"]
    flags += ["--stream-call-duration", "1s", "--count-errors"]
    config = config_from_args(build_parser().parse_args(flags))
    assert (config.stream_call_count, config.stream_call_duration_s) == (2, 1.0)
    assert config.count_errors
    unset = config_from_args(build_parser().parse_args(["--config", write_config(tmp_path)]))
    assert (unset.stream_call_count, unset.stream_call_duration_s) == (0, 0.0)
    assert not unset.count_errors


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        (["--call", "vae.v1.VAEService.Sample"], "no host"),
        (["127.0.0.1:50051"], "no method to call"),
    ],
)
def test_a_run_without_host_or_method_is_refused_by_name(flags, missing, capsys) -> None:
    assert main(["--insecure", *flags]) == EXIT_UNUSABLE
    assert capsys.readouterr().err.startswith(f"vae-loadtest: {missing}")


def test_call_data_can_come_from_a_file(tmp_path) -> None:
    data = tmp_path / "data.json"
    data.write_text('[{"count": 5}]')
    assert load_config(write_config(tmp_path, **{"data-file": str(data)})).data == ({"count": 5},)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"load-schedule": "step"}, "not supported"),
        ({"async": True}, "not supported"),
        ({"protoset": "set.bin"}, "not supported"),
        ({"qps": 10}, "unknown ghz setting 'qps'"),
        ({"data": {"count": "{{.RequestNumber}}"}}, "template actions"),
        ({"data": []}, "non-empty array"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"cert": "client.pem"}, "--cert and --key go together"),
        ({"duration-stop": "drain"}, "duration-stop must be one of close, wait, ignore"),
        ({"stream-call-count": -1}, "stream-call-count cannot be negative"),
        ({"stream-interval": "10ms"}, "not supported"),
    ],
)
def test_settings_this_generator_cannot_honour_are_refused(tmp_path, settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, **settings))


def test_ghz_settings_at_their_defaults_are_accepted(tmp_path) -> None:
    path = write_config(tmp_path, **{"load-schedule": "const", "async": False, "format": "json"})
    assert load_config(path).call == "vae.v1.VAEService.Sample"


def test_slos_are_a_comma_separated_list() -> None:
    assert parse_slos("p99=50ms, p99.9=1s,average=20ms") == (
        ("p99", 0.05),
        ("p99.9", 1.0),
        ("average", 0.02),
    )


@pytest.mark.parametrize("text", ["p99", "p0=1s", "p101=1s", "median=1s", "p99=fast"])
def test_malformed_slos_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_slos(text)
