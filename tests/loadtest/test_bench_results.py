"""bench.results: the targets of several rounds, each taken within its round, then the median."""

import pytest

from bench.__main__ import runs_on
from bench.results import FLOOR, REFERENCE, THREAD_POOL_FLOOR, check_targets, combine_rounds
from bench.scenarios import SCENARIOS as BENCH_SCENARIOS
from bench.scenarios import Scenario

SERVERS = (FLOOR, THREAD_POOL_FLOOR, "batching on", "batching off", REFERENCE)
SCENARIOS = (("Sample count 1, c=1", 1), ("Sample count 1, c=32", 1),
             ("Sample count 1024, c=4", 1024))


def a_round(rps: dict[str, float], p50: dict[str, float], limit_1024: float) -> dict:
    """One round in which every server has the same figures in every scenario."""
    rows = []
    for scenario, sample_rows in SCENARIOS:
        for server in SERVERS:
            rows.append({
                "server": server, "scenario": scenario, "rows": sample_rows,
                "count": 10, "ok": 10, "rps": rps[server],
                "samples_per_s": rps[server] * sample_rows, "p50_s": p50[server],
                "p90_s": p50[server], "p99_s": 2 * p50[server], "client_cpu_s": 1.0,
                "server_cpu_s": 2.0, "wall_s": 2.0, "server_peak_rss_mib": 50.0 + rps[server],
                "status": {"OK": 10},
            })
    limits = {"decoder": {1024: limit_1024}, "encoder": {1024: limit_1024}}
    return {"compute_limit_rows_per_s": limits, "rows": rows}


def figures(floor: float, thread_pool: float, on: float, off: float,
            reference: float) -> dict[str, float]:
    return dict(zip(SERVERS, (floor, thread_pool, on, off, reference), strict=True))


def target(combined: dict, name: str) -> dict:
    return next(t for t in combined["targets"] if t["target"].startswith(name))


def test_each_ratio_is_taken_within_its_round_and_the_median_is_reported():
    # The machine slows down in round 2: every figure doubles, every ratio stays the same.
    rounds = [
        a_round(figures(1000, 1800, 900, 500, 800), figures(1.0, 0.8, 1.2, 1.2, 1.1),
                1000 * 1024 / 0.9),
        a_round(figures(500, 900, 450, 250, 400), figures(2.0, 1.6, 2.4, 2.4, 2.2),
                500 * 1024 / 0.9),
        a_round(figures(1000, 1800, 990, 500, 800), figures(1.0, 0.8, 1.05, 1.2, 1.1),
                1000 * 1024 / 0.9),
    ]
    combined = combine_rounds(rounds)

    c1 = target(combined, "Sample 1 @ c=1 p50")
    assert c1["rounds"] == pytest.approx([1.2, 1.2, 1.05])
    assert c1["ratio"] == pytest.approx(1.2)
    assert not c1["met"]  # the median decides, not the best round
    assert c1["ceiling"] == pytest.approx(1.1)

    c32 = target(combined, "Sample 1 @ c=32 requests/s")
    assert c32["rounds"] == pytest.approx([0.9, 0.9, 0.99])
    assert c32["met"]
    batching = target(combined, "Sample 1 @ c=32 batching on vs off")
    assert batching["ratio"] == pytest.approx(1.8)

    big = target(combined, "Sample 1024")
    assert big["rounds"] == pytest.approx([0.81, 0.81, 0.891])
    assert big["met"]
    assert big["ceiling"] == pytest.approx(0.72)

    # The same goals against the thread-pool floor, the kind of server the service runs on.
    c32_threads = target(combined, "Sample 1 @ c=32 requests/s vs thread-pool floor")
    assert c32_threads["ratio"] == pytest.approx(0.5) and not c32_threads["met"]
    c1_threads = target(combined, "Sample 1 @ c=1 p50 vs thread-pool floor")
    assert c1_threads["ratio"] == pytest.approx(1.5)
    assert c1_threads["ceiling"] == pytest.approx(1.375)


def test_rows_sum_counts_and_times_and_take_the_median_rate_and_the_highest_rss():
    rounds = [a_round(figures(f, f, f, f, f), figures(*[1 / f] * 5), 1000.0)
              for f in (100.0, 300.0, 200.0)]
    combined = combine_rounds(rounds)

    assert len(combined["rows"]) == len(SERVERS) * len(SCENARIOS)
    row = next(r for r in combined["rows"]
               if r["server"] == "floor" and r["scenario"] == "Sample count 1024, c=4")
    assert row["count"] == 30 and row["status"] == {"OK": 30}
    assert row["wall_s"] == 6.0 and row["server_cpu_s"] == 6.0
    assert row["rps"] == 200.0 and row["samples_per_s"] == 200.0 * 1024
    assert row["p50_s"] == pytest.approx(1 / 200)
    assert row["server_peak_rss_mib"] == 350.0
    assert [r["rps"] for r in row["rounds"]] == [100.0, 300.0, 200.0]
    assert combined["compute_limit_rows_per_s"]["decoder"][1024] == 1000.0


def latent_round(service_rows_per_s: float, in_process_rows_per_s: float) -> dict:
    """A round of one latent-space scenario (10 rows a call) on the service alone."""
    scenario = "Interpolate 8 steps, c=1"
    row = {
        "server": "batching on", "scenario": scenario, "rows": 10, "concurrency": 1,
        "count": 10, "ok": 10, "rps": service_rows_per_s / 10,
        "samples_per_s": service_rows_per_s, "p50_s": 0.001, "p90_s": 0.001, "p99_s": 0.002,
        "client_cpu_s": 1.0, "server_cpu_s": 1.0, "wall_s": 1.0, "server_peak_rss_mib": 90.0,
        "status": {"OK": 10},
    }
    return {"compute_limit_rows_per_s": {"decoder": {1: 1.0}, "encoder": {1: 1.0}},
            "latent_in_process_rows_per_s": {scenario: in_process_rows_per_s}, "rows": [row]}


def test_latent_rpcs_are_set_against_onnxruntime_in_process_within_each_round():
    # Round 2 is slower all round: the ratio stays, and the median ratio is not the ratio of
    # the medians.
    rounds = [latent_round(5000, 100_000), latent_round(2000, 50_000),
              latent_round(6000, 100_000)]
    combined = combine_rounds(rounds, with_targets=False)

    (latent,) = combined["latent"]
    assert (latent["scenario"], latent["server"], latent["rows"]) == (
        "Interpolate 8 steps, c=1", "batching on", 10
    )
    assert latent["rounds"] == pytest.approx([0.05, 0.04, 0.06])
    assert latent["ratio"] == pytest.approx(0.05)
    assert latent["rows_per_s"] == 5000 and latent["in_process_rows_per_s"] == 100_000
    assert combined["latent_in_process_rows_per_s"] == {"Interpolate 8 steps, c=1": 100_000}
    assert combined["targets"] == []


def test_rounds_without_latent_scenarios_keep_the_results_format():
    rounds = [a_round(figures(*[100.0] * 5), figures(*[0.01] * 5), 1000.0)]
    combined = combine_rounds(rounds)

    assert set(combined) == {"compute_limit_rows_per_s", "rows", "targets",
                             "latent_in_process_rows_per_s", "latent", "unary_beside_streams"}
    assert combined["latent"] == [] and combined["latent_in_process_rows_per_s"] == {}
    assert combined["unary_beside_streams"] == []
    assert [t["target"] for t in combined["targets"]] == [
        t["target"] for t in check_targets(rounds[0])
    ]


def test_rows_keep_the_connections_they_were_measured_with():
    """Rows written before --connections have no such key (one connection); newer ones do."""
    rounds = [a_round(figures(*[100.0] * 5), figures(*[0.01] * 5), 1000.0) for _ in range(2)]
    assert "connections" not in combine_rounds(rounds)["rows"][0]
    for each in rounds:
        for row in each["rows"]:
            row["connections"] = 4
    assert {row["connections"] for row in combine_rounds(rounds)["rows"]} == {4}


@pytest.mark.parametrize(
    ("callers", "requested", "procs", "opened"),
    [(32, 1, 1, 1), (32, 4, 1, 4), (1, 4, 1, 1), (32, 1, 2, 2), (4, 2, 8, 4)],
)
def test_a_scenario_opens_the_connections_asked_for_within_its_callers_and_processes(
    callers: int, requested: int, procs: int, opened: int
):
    config = Scenario("s", "Sample", 1, callers).run_config("127.0.0.1:1", 1.0, procs, requested)
    assert config.connections == opened


def test_uint8_is_held_against_onnxruntime_at_its_own_batch_and_against_float32():
    rows = []
    # samples/s: the service and the floor + onnxruntime, FLOAT32 and UINT8, 1,024 and 4,096.
    service = {(1024, "FLOAT32"): 150_000, (1024, "UINT8"): 180_000,
               (4096, "FLOAT32"): 100_000, (4096, "UINT8"): 190_000}
    reference = {(1024, "FLOAT32"): 160_000, (1024, "UINT8"): 190_000,
                 (4096, "FLOAT32"): 110_000, (4096, "UINT8"): 195_000}
    for (sample_rows, dtype), samples in service.items():
        scenario = f"Sample count {sample_rows}, c=4" + (", UINT8" if dtype == "UINT8" else "")
        for server in SERVERS:
            rate = {"batching on": samples, REFERENCE: reference[sample_rows, dtype]}.get(server, 1)
            rows.append({
                "server": server, "scenario": scenario, "rows": sample_rows, "count": 10,
                "ok": 10, "rps": rate / sample_rows, "samples_per_s": rate, "p50_s": 0.01,
                "p90_s": 0.01, "p99_s": 0.02, "client_cpu_s": 1.0, "server_cpu_s": 2.0,
                "wall_s": 2.0, "server_peak_rss_mib": 100.0, "status": {"OK": 10},
            })
    limits = {"decoder": {1024: 200_000, 4096: 200_000}, "encoder": {1024: 1.0, 4096: 1.0}}
    combined = combine_rounds([{"compute_limit_rows_per_s": limits, "rows": rows}])

    # Only the targets whose scenarios ran (`python -m bench --only "count 1024" ...`).
    assert [t["target"] for t in combined["targets"]] == [
        "Sample 1024 @ c=4 samples/s vs onnxruntime batch 1024",
        "Sample 1024 @ c=4 UINT8 samples/s vs onnxruntime batch 1024",
        "Sample 1024 @ c=4 UINT8 vs FLOAT32 (samples/s)",
        "Sample 4096 @ c=4 UINT8 samples/s vs onnxruntime batch 4096",
        "Sample 4096 @ c=4 UINT8 vs FLOAT32 (samples/s)",
    ]
    uint8_1024 = target(combined, "Sample 1024 @ c=4 UINT8 samples/s")
    assert uint8_1024["ratio"] == pytest.approx(0.9) and uint8_1024["met"]
    assert uint8_1024["goal"] == 0.9 and uint8_1024["ceiling"] == pytest.approx(0.95)
    uint8_4096 = target(combined, "Sample 4096 @ c=4 UINT8 samples/s")
    assert uint8_4096["ratio"] == pytest.approx(0.95)
    assert uint8_4096["ceiling"] == pytest.approx(0.975)
    assert target(combined, "Sample 4096 @ c=4 UINT8 vs FLOAT32")["ratio"] == pytest.approx(1.9)
    smaller = target(combined, "Sample 1024 @ c=4 UINT8 vs FLOAT32")
    assert smaller["ratio"] == pytest.approx(1.2) and smaller["met"]


def service_row(scenario: str, rows: int, rate_rows_per_s: float, p99_s: float = 0.02,
                server: str = "batching on", concurrency: int = 2, **extra) -> dict:
    """A row of a scenario that runs on the service alone."""
    return {
        "server": server, "scenario": scenario, "method": "Sample", "rows": rows,
        "concurrency": concurrency, "count": 10, "ok": 10, "rps": rate_rows_per_s / rows,
        "samples_per_s": rate_rows_per_s, "p50_s": p99_s / 2, "p90_s": p99_s, "p99_s": p99_s,
        "client_cpu_s": 1.0, "server_cpu_s": 2.0, "wall_s": 2.0, "server_peak_rss_mib": 100.0,
        "status": {"OK": 10}, **extra,
    }


def test_streams_are_held_against_onnxruntime_at_their_chunk_size_within_each_round():
    # Round 2 is slower all round; the ratio is taken within it.
    rounds = []
    for uint8, float32, limit in ((180_000, 150_000, 200_000), (90_000, 70_000, 100_000),
                                  (170_000, 160_000, 200_000)):
        rows = [service_row("SampleStream chunk 1024, UINT8", 50_000, uint8),
                service_row("SampleStream chunk 1024, FLOAT32", 50_000, float32),
                service_row("SampleStream chunk 1024, UINT8", 50_000, 1000.0,
                            server="batching off")]
        limits = {"decoder": {1: 1.0, 1024: limit}, "encoder": {1024: 1.0}}
        rounds.append({"compute_limit_rows_per_s": limits, "rows": rows})
    combined = combine_rounds(rounds)

    assert [t["target"] for t in combined["targets"]] == [
        "SampleStream chunk 1024 UINT8 rows/s vs onnxruntime batch 1024",
        "SampleStream chunk 1024 FLOAT32 rows/s vs onnxruntime batch 1024",
    ]
    uint8 = target(combined, "SampleStream chunk 1024 UINT8")
    assert uint8["rounds"] == pytest.approx([0.9, 0.9, 0.85])
    assert uint8["ratio"] == pytest.approx(0.9) and uint8["met"]
    assert uint8["goal"] == 0.9 and uint8["at_least"] and uint8["ceiling"] is None
    float32 = target(combined, "SampleStream chunk 1024 FLOAT32")
    assert float32["rounds"] == pytest.approx([0.75, 0.7, 0.8])
    assert float32["ratio"] == pytest.approx(0.75) and not float32["met"]


def beside_streams_round(alone_p99_s: float, with_streams_p99_s: float,
                         stream_rows_per_s: float) -> dict:
    """A round of unary Sample 1 at c=8 alone and beside two streams, on both services."""
    rows = []
    for server, slower in (("batching on", 1.0), ("batching off", 3.0)):
        rows.append(service_row("Sample count 1, c=8, no streams", 1, 1000.0,
                                alone_p99_s * slower, server, 8, background_streams=0,
                                background_stream_rows_per_s=0.0))
        rows.append(service_row("Sample count 1, c=8, two streams running", 1, 500.0,
                                with_streams_p99_s * slower, server, 8, background_streams=2,
                                background_stream_rows_per_s=stream_rows_per_s))
    return {"compute_limit_rows_per_s": {"decoder": {1: 1.0}, "encoder": {1: 1.0}},
            "rows": rows}


def test_unary_p99_beside_streams_is_a_ratio_within_each_round():
    rounds = [beside_streams_round(0.010, 0.030, 100_000),
              beside_streams_round(0.020, 0.040, 60_000),
              beside_streams_round(0.010, 0.025, 90_000)]
    combined = combine_rounds(rounds, with_targets=False)

    on, off = combined["unary_beside_streams"]
    assert (on["server"], off["server"]) == ("batching on", "batching off")
    assert on["scenario"] == "Sample count 1, c=8, two streams running"
    assert on["alone_scenario"] == "Sample count 1, c=8, no streams"
    assert (on["concurrency"], on["streams"]) == (8, 2)
    assert on["rounds"] == pytest.approx([3.0, 2.0, 2.5])
    assert on["ratio"] == pytest.approx(2.5)  # the median ratio, not the medians' ratio (3.0)
    assert on["p99_alone_s"] == pytest.approx(0.010)
    assert on["p99_with_streams_s"] == pytest.approx(0.030)
    assert on["stream_rows_per_s"] == 90_000
    assert off["ratio"] == pytest.approx(2.5)
    row = next(r for r in combined["rows"]
               if r["server"] == "batching on" and r.get("background_streams") == 2)
    assert row["background_stream_rows_per_s"] == 90_000


def test_streaming_and_beside_streams_scenarios_run_on_the_service_alone():
    services = {"batching on", "batching off"}
    by_name = {scenario.name: scenario for scenario in BENCH_SCENARIOS}
    for name in ("SampleStream chunk 1024, UINT8", "SampleStream chunk 1024, FLOAT32",
                 "Sample count 1, c=8, no streams", "Sample count 1, c=8, two streams running"):
        assert runs_on(by_name[name], "batching on", services)
        assert not runs_on(by_name[name], FLOOR, services)
        assert not runs_on(by_name[name], REFERENCE, services)
    assert runs_on(by_name["Sample count 1, c=8"], FLOOR, services)
    stream = by_name["SampleStream chunk 1024, UINT8"].run_config("127.0.0.1:1", 1.0, 1)
    assert stream.call == "vae.v1.VAEService.SampleStream"
    assert stream.data == ({"count": "50000", "seed": "7", "chunkRows": 1024,
                            "outputDtype": "UINT8"},)
