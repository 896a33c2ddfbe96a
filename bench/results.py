"""The benchmark's table, its target ratios, and its plot."""

from __future__ import annotations

from pathlib import Path
from statistics import median

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# The floor (bench.floor_server): grpc.aio's, which the targets are set against, and grpcio's
# thread-pool server, the kind the service runs on.
FLOOR = "floor"
THREAD_POOL_FLOOR = "floor, thread pool"
# The thread-pool floor running each call's graph in its handler.
REFERENCE = "floor + onnxruntime"
# Per round, by scenario name: onnxruntime in-process on a latent-space scenario's rows.
LATENT_IN_PROCESS = "latent_in_process_rows_per_s"
# Unary Sample's p99 with SampleStream calls running beside it, against the same load alone.
BESIDE_STREAMS = "unary_beside_streams"
STREAM_CHUNK = 1024  # the SampleStream scenarios' chunk size: the batch they are held against


def find(results: dict, server: str, scenario: str) -> dict:
    return next(r for r in results["rows"] if r["server"] == server and r["scenario"] == scenario)


def check_targets(results: dict) -> list[dict]:
    """The targets, as ratios from one round, in which all were measured close in time.

    The targets that compare the service with something that does only part of its work also
    get their ceiling, measured in the same round: the ratio reached by the floor server
    running the graph in its handler, a service with no overhead of its own on the same core.
    A goal beyond its ceiling cannot be met by tuning the service.

    The service does not run on grpc.aio, the floor the targets were set against, but on grpcio's
    thread-pool server: the first two targets are also given against that floor, with the same
    goals, as a stricter reading. A target whose scenarios were not run (`--scenarios`) is left out.
    """
    limits = results["compute_limit_rows_per_s"]["decoder"]
    run = {row["scenario"] for row in results["rows"]}

    def ratio(name: str, measured: float, reference: float, goal: float, at_least: bool,
              ceiling: float | None = None) -> dict:
        value = measured / reference if reference else float("inf")
        return {"target": name, "ratio": value, "goal": goal, "at_least": at_least,
                "met": meets(value, goal, at_least), "ceiling": ceiling}

    def samples_per_s(server: str, scenario: str) -> float:
        return find(results, server, scenario)["samples_per_s"]

    c32, c1, big = "Sample count 1, c=32", "Sample count 1, c=1", "Sample count 1024, c=4"

    def against(floor: str, label: str) -> list[dict]:
        if not {c1, c32} <= run:
            return []
        floor_c1 = find(results, floor, c1)["p50_s"]
        reference_c1 = find(results, REFERENCE, c1)["p50_s"]
        return [
            ratio(f"Sample 1 @ c=32 requests/s vs {label}",
                  find(results, "batching on", c32)["rps"], find(results, floor, c32)["rps"],
                  0.85, True),
            ratio(f"Sample 1 @ c=32 p99 vs {label}", find(results, "batching on", c32)["p99_s"],
                  find(results, floor, c32)["p99_s"], 1.5, False),
            ratio(f"Sample 1 @ c=1 p50 vs {label}", find(results, "batching on", c1)["p50_s"],
                  floor_c1, 1.10, False, reference_c1 / floor_c1),
        ]

    def against_onnxruntime(rows: int, scenario: str, label: str, goal: float) -> list[dict]:
        if scenario not in run:
            return []
        return [ratio(f"Sample {rows} @ c=4 {label}samples/s vs onnxruntime batch {rows}",
                      samples_per_s("batching on", scenario), limits[rows], goal, True,
                      samples_per_s(REFERENCE, scenario) / limits[rows])]

    def stream_against_onnxruntime(dtype: str, goal: float) -> list[dict]:
        scenario = f"SampleStream chunk {STREAM_CHUNK}, {dtype}"
        if scenario not in run:
            return []
        # No ceiling: the floor + onnxruntime server does not stream.
        return [ratio(f"SampleStream chunk {STREAM_CHUNK} {dtype} rows/s vs onnxruntime batch "
                      f"{STREAM_CHUNK}", samples_per_s("batching on", scenario),
                      limits[STREAM_CHUNK], goal, True)]

    def uint8_against_float32(rows: int) -> list[dict]:
        uint8, float32 = f"Sample count {rows}, c=4, UINT8", f"Sample count {rows}, c=4"
        if not {uint8, float32} <= run:
            return []
        # Our own goal besides the one against onnxruntime: UINT8 responses, a quarter of the
        # bytes, must not be slower.
        return [ratio(f"Sample {rows} @ c=4 UINT8 vs FLOAT32 (samples/s)",
                      samples_per_s("batching on", uint8), samples_per_s("batching on", float32),
                      1.0, True)]

    targets = against(FLOOR, "floor")
    targets += against_onnxruntime(1024, big, "", 0.80)
    if c32 in run:
        targets.append(ratio("Sample 1 @ c=32 batching on vs off (requests/s)",
                             find(results, "batching on", c32)["rps"],
                             find(results, "batching off", c32)["rps"], 1.3, True))
    targets += against(THREAD_POOL_FLOOR, "thread-pool floor")
    for rows in (1024, 4096):
        targets += against_onnxruntime(rows, f"Sample count {rows}, c=4, UINT8", "UINT8 ", 0.9)
        targets += uint8_against_float32(rows)
    targets += stream_against_onnxruntime("UINT8", 0.9)
    # Our own goal: FLOAT32 streams held to unary FLOAT32 Sample 1024's goal.
    targets += stream_against_onnxruntime("FLOAT32", 0.8)
    return targets


def meets(value: float, goal: float, at_least: bool) -> bool:
    return value >= goal if at_least else value <= goal


def combine_rounds(rounds: list[dict], with_targets: bool = True) -> dict:
    """One result from several rounds: the median of each rate, latency and ratio.

    Each round measured everything once, so a target's ratio is taken within a round (from
    figures measured minutes apart at most) and the rounds give its spread on this machine.
    Without `with_targets` (a run of some scenarios only) no target is checked.
    """
    limits = {graph: {batch: median(r["compute_limit_rows_per_s"][graph][batch] for r in rounds)
                      for batch in by_batch}
              for graph, by_batch in rounds[0]["compute_limit_rows_per_s"].items()}
    rows = [combine_rows([find(r, row["server"], row["scenario"]) for r in rounds])
            for row in rounds[0]["rows"]]
    per_round = [check_targets(r) if with_targets else [] for r in rounds]
    targets = []
    for i, first in enumerate(per_round[0]):
        ratios = [round_targets[i]["ratio"] for round_targets in per_round]
        ceilings = [round_targets[i]["ceiling"] for round_targets in per_round]
        value = median(ratios)
        targets.append({**first, "ratio": value, "rounds": ratios,
                        "met": meets(value, first["goal"], first["at_least"]),
                        "ceiling": None if first["ceiling"] is None else median(ceilings)})
    return {"compute_limit_rows_per_s": limits, "rows": rows, "targets": targets,
            **combine_latent(rounds), BESIDE_STREAMS: combine_beside_streams(rounds)}


def combine_latent(rounds: list[dict]) -> dict:
    """The latent-space scenarios against onnxruntime in-process on the same rows.

    For each server that ran one: rows/s (calls/s times the rows each call runs, both graphs'
    added up), the in-process rows/s, and their ratio, taken within each round; the medians
    over the rounds, and each round's ratio.
    """
    in_process = [r.get(LATENT_IN_PROCESS, {}) for r in rounds]
    latent = []
    for row in rounds[0]["rows"]:
        if row["scenario"] not in in_process[0]:
            continue
        measured = [find(r, row["server"], row["scenario"])["samples_per_s"] for r in rounds]
        limits = [figures[row["scenario"]] for figures in in_process]
        ratios = [m / limit for m, limit in zip(measured, limits, strict=True)]
        latent.append({"scenario": row["scenario"], "server": row["server"],
                       "rows": row["rows"], "concurrency": row["concurrency"],
                       "rows_per_s": median(measured), "in_process_rows_per_s": median(limits),
                       "ratio": median(ratios), "rounds": ratios})
    limits_by_name = {name: median(figures[name] for figures in in_process)
                      for name in in_process[0]}
    return {LATENT_IN_PROCESS: limits_by_name, "latent": latent}


def combine_beside_streams(rounds: list[dict]) -> list[dict]:
    """Unary Sample's p99 with SampleStream calls running beside it (rows with
    `background_streams` above 0) against the same load alone (0), per server that ran both.

    The ratio, with streams over alone, is taken within each round, from two runs measured back
    to back; reported are the medians over the rounds and each round's ratio, and the rows per
    second the background streams got meanwhile.
    """
    compared = []
    for row in rounds[0]["rows"]:
        if not row.get("background_streams"):
            continue
        alone = next(r["scenario"] for r in rounds[0]["rows"]
                     if r["server"] == row["server"] and r.get("background_streams") == 0
                     and (r["rows"], r["concurrency"]) == (row["rows"], row["concurrency"]))
        with_streams = [find(r, row["server"], row["scenario"]) for r in rounds]
        without = [find(r, row["server"], alone) for r in rounds]
        ratios = [w["p99_s"] / a["p99_s"] for w, a in zip(with_streams, without, strict=True)]
        compared.append({
            "server": row["server"], "scenario": row["scenario"], "alone_scenario": alone,
            "concurrency": row["concurrency"], "streams": row["background_streams"],
            "p99_alone_s": median(a["p99_s"] for a in without),
            "p99_with_streams_s": median(w["p99_s"] for w in with_streams),
            "ratio": median(ratios), "rounds": ratios,
            "stream_rows_per_s": median(w["background_stream_rows_per_s"] for w in with_streams),
        })
    return compared


def combine_rows(rows: list[dict]) -> dict:
    """A server's scenario over the rounds: counts and times summed, rates and latencies the
    median of the rounds', peak RSS the highest."""
    combined = {**rows[0]}
    for key in ("count", "ok", "client_cpu_s", "server_cpu_s", "wall_s"):
        combined[key] = sum(row[key] for row in rows)
    for key in ("rps", "samples_per_s", "p50_s", "p90_s", "p99_s"):
        combined[key] = median(row[key] for row in rows)
    combined["server_peak_rss_mib"] = max(row["server_peak_rss_mib"] for row in rows)
    if "background_stream_rows_per_s" in combined:
        combined["background_stream_rows_per_s"] = median(
            row["background_stream_rows_per_s"] for row in rows
        )
    status: dict[str, int] = {}
    for row in rows:
        for code, count in row["status"].items():
            status[code] = status.get(code, 0) + count
    combined["status"] = status
    combined["rounds"] = [{key: row[key] for key in ("rps", "p50_s", "p99_s")} for row in rows]
    return combined


def print_table(results: dict) -> None:
    print("\n| scenario | server | req/s | samples/s | p50 ms | p99 ms | server CPU | "
          "client CPU | server RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["rows"]:
        print(f"| {row['scenario']} | {row['server']} | {row['rps']:,.0f} | "
              f"{row['samples_per_s']:,.0f} | {row['p50_s'] * 1e3:.2f} | "
              f"{row['p99_s'] * 1e3:.2f} | {row['server_cpu_s'] / row['wall_s']:.0%} | "
              f"{row['client_cpu_s'] / row['wall_s']:.0%} | {row['server_peak_rss_mib']:.0f} |")
    limits = results["compute_limit_rows_per_s"]
    print("\n| onnxruntime in-process | batch 1 | batch 64 | batch 1024 | batch 4096 |")
    print("|---|---:|---:|---:|---:|")
    for graph, by_batch in limits.items():
        cells = " | ".join(f"{by_batch[b]:,.0f}" for b in sorted(by_batch, key=int))
        print(f"| {graph} rows/s | {cells} |")
    if results["targets"]:
        print(f"\n| target | ratio (median) | rounds | goal | met | ceiling ({REFERENCE}) |")
        print("|---|---:|---|---|---|---:|")
    for target in results["targets"]:
        ceiling = "" if target["ceiling"] is None else f"{target['ceiling']:.2f}"
        rounds = ", ".join(f"{ratio:.2f}" for ratio in target["rounds"])
        goal = f"{'>=' if target['at_least'] else '<='} {target['goal']}"
        print(f"| {target['target']} | {target['ratio']:.2f} | {rounds} | {goal} | "
              f"{'yes' if target['met'] else 'NO'} | {ceiling} |")
    if results["latent"]:
        print("\n| latent-space RPC | server | rows/call | rows/s | onnxruntime in-process "
              "rows/s | service / in-process (median) | rounds |")
        print("|---|---|---:|---:|---:|---:|---|")
    for row in results["latent"]:
        rounds = ", ".join(f"{ratio:.2f}" for ratio in row["rounds"])
        print(f"| {row['scenario']} | {row['server']} | {row['rows']} | {row['rows_per_s']:,.0f} | "
              f"{row['in_process_rows_per_s']:,.0f} | {row['ratio']:.2f} | {rounds} |")
    if results.get(BESIDE_STREAMS):
        print("\n| unary beside streams | server | p99 ms alone | p99 ms with streams | "
              "with / alone (median) | rounds | stream rows/s |")
        print("|---|---|---:|---:|---:|---|---:|")
    for row in results.get(BESIDE_STREAMS, []):
        rounds = ", ".join(f"{ratio:.2f}" for ratio in row["rounds"])
        print(f"| {row['scenario']} | {row['server']} | {row['p99_alone_s'] * 1e3:.2f} | "
              f"{row['p99_with_streams_s'] * 1e3:.2f} | {row['ratio']:.2f} | {rounds} | "
              f"{row['stream_rows_per_s']:,.0f} |")


def _plain_number(value: float, _position: int) -> str:
    return f"{value:g}"


def _two_and_five(value: float, _position: int) -> str:
    """Label a log axis's minor ticks at 2 and 5 times a power of ten, the others not."""
    return f"{value:g}" if f"{value:e}"[0] in "25" else ""


def plot(results: dict, path: Path) -> None:
    """Sample count 1 per server: throughput and p99 latency against concurrency (closed loop),
    and p99 latency against the arrival rate (open loop)."""
    figure, (throughput, latency, open_loop) = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    for server in (FLOOR, THREAD_POOL_FLOOR, "batching on", "batching off", REFERENCE):
        # The runs beside streams (and their baseline) are another comparison: not plotted.
        rows = [r for r in results["rows"]
                if r["server"] == server and r["method"] == "Sample" and r["rows"] == 1
                and "background_streams" not in r]
        closed = [r for r in rows if not r.get("offered_rps")]
        concurrency = [r["concurrency"] for r in closed]
        throughput.plot(concurrency, [r["rps"] for r in closed], marker="o", label=server)
        latency.plot(concurrency, [r["p99_s"] * 1e3 for r in closed], marker="o", label=server)
        scheduled = [r for r in rows if r.get("offered_rps")]
        open_loop.plot([r["offered_rps"] for r in scheduled],
                       [r["p99_s"] * 1e3 for r in scheduled], marker="o", label=server)
    throughput.set(title="Sample count 1: throughput", xlabel="concurrency",
                   ylabel="requests/s", xscale="log")
    latency.set(title="Sample count 1: p99 latency", xlabel="concurrency", ylabel="ms",
                xscale="log", yscale="log")
    open_loop.set(title="Sample count 1, open loop: p99 latency", xlabel="arrivals per second",
                  ylabel="ms", yscale="log")
    for axes in (throughput, latency, open_loop):
        axes.grid(alpha=0.3)
        axes.legend()
        for axis in (axes.xaxis, axes.yaxis):
            if axis.get_scale() == "log":  # ticks read 2, 5, 10, not 2×10⁰
                axis.set_major_formatter(FuncFormatter(_plain_number))
                # Within one decade, every minor tick is labelled: 2 and 5 alone may be one tick.
                low, high = axis.get_view_interval()
                within_a_decade = high / low < 10
                axis.set_minor_formatter(
                    FuncFormatter(_plain_number if within_a_decade else _two_and_five)
                )
    figure.suptitle(f"{results['machine']['cpu']}, {results['date']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
