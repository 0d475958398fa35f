"""Run every benchmark, print the table and write benchmarks/results.json.

    .venv/bin/python benchmarks/run_all.py            # all of them (make bench)
    .venv/bin/python benchmarks/run_all.py --quick    # a smoke run: small sizes, two repetitions
    .venv/bin/python benchmarks/run_all.py --only ingest,history,wide

Each figure is a ratio against a baseline measured in the same run on the same
PostgreSQL server (the embedded one, or MODELWATCH_DATABASE_URL's), as the
median of several repetitions with their spread (min-max). results.json holds
the median of each headline figure under its key, and every detail under
"figures". Timings depend on the machine being otherwise idle: the load
average at start and end is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Figure, log  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
ORDER = ("ingest", "backfill", "history", "panels", "big_batch", "wide", "estimation")


def table(figures: list[Figure]) -> str:
    lines = ["| figure | median | spread (min-max) | runs | target | met | margin |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for figure in figures:
        value = figure.value
        fmt = "{:.0f}" if figure.unit in ("MB",) else "{:.1f}" if figure.unit == "ms" else "{:.2f}"
        unit = "" if figure.unit == "x" else f" {figure.unit}"
        lines.append(
            f"| `{figure.key}`: {figure.title} | {fmt.format(value.median)}{unit} | "
            f"{fmt.format(value.low)}-{fmt.format(value.high)}{unit} | {value.runs} | {figure.target}{unit} | "
            f"{'yes' if figure.met else 'NO'} | {figure.margin} |")
    notes = [f"- `{figure.key}`: {figure.note}" for figure in figures if figure.note]
    return "\n".join(lines + [""] + notes)


def merged_with_earlier(path: Path, payload: dict, chosen: list[str]) -> dict:
    """A partial run (--only) over the results already in `path`: its figures replace theirs,
    the others are kept, with the run that measured them under "earlier_run"."""
    if not path.exists():
        return payload
    earlier = json.loads(path.read_text())
    kept = {key: figure for key, figure in earlier.get("figures", {}).items() if key not in payload["figures"]}
    merged = {key: earlier[key] for key in kept if key in earlier}
    merged.update({key: value for key, value in payload.items() if key not in ("figures", "run")})
    merged["figures"] = {**kept, **payload["figures"]}
    merged["run"] = {**payload["run"], "only": chosen}
    if kept:
        merged["earlier_run"] = earlier.get("earlier_run") if "only" in earlier.get("run", {}) else earlier.get("run")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated subset of {', '.join(ORDER)}")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 repetitions, 300k-row big batch, 62 days of history, "
                             "5k-row wide batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [name for name in ORDER if name in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    import bench_backfill
    import bench_estimation
    import bench_big_batch
    import bench_history
    import bench_ingest
    import bench_panels
    import bench_wide

    # estimation: NannyML alone takes minutes per repetition (it is the baseline, not modelwatch)
    repeats = {"ingest": 5, "backfill": 3, "history": 7, "panels": 10, "big_batch": 2, "wide": 3, "estimation": 1}
    if args.quick:
        repeats = {name: 2 for name in repeats} | {"estimation": 1}
        bench_big_batch.ROWS = 300_000
        bench_history.HISTORY_DAYS = 62
        bench_wide.ROWS = bench_wide.REFERENCE_ROWS = 5_000

    started = time.perf_counter()
    load_before = os.getloadavg()
    figures: list[Figure] = []
    seconds: dict[str, float] = {}
    with common.server() as srv:
        server_version = srv.version()
        log(f"PostgreSQL {server_version} ({'embedded' if srv.embedded else 'MODELWATCH_DATABASE_URL'}); "
            f"running {', '.join(chosen)}; load average {load_before[0]:.1f}")
        if "ingest" in chosen:
            clock = time.perf_counter()
            figures.append(bench_ingest.run(srv, repeats["ingest"]))
            seconds["ingest"] = time.perf_counter() - clock
        if "backfill" in chosen:
            clock = time.perf_counter()
            figures.append(bench_backfill.run(srv, repeats["backfill"]))
            seconds["backfill"] = time.perf_counter() - clock
        if "history" in chosen or "panels" in chosen:
            clock = time.perf_counter()
            with bench_history.year_database(srv) as year:
                if "history" in chosen:
                    figures.append(bench_history.run(srv, repeats["history"], year=year))
                if "panels" in chosen:
                    figures.append(bench_panels.run(srv, repeats["panels"], year=year))
            seconds["history+panels"] = time.perf_counter() - clock
        if "big_batch" in chosen:
            clock = time.perf_counter()
            figures.extend(bench_big_batch.run(srv, repeats["big_batch"]))
            seconds["big_batch"] = time.perf_counter() - clock
        if "wide" in chosen:
            clock = time.perf_counter()
            figures.extend(bench_wide.run(srv, repeats["wide"]))
            seconds["wide"] = time.perf_counter() - clock
        if "estimation" in chosen:
            clock = time.perf_counter()
            figures.extend(bench_estimation.run(srv, repeats["estimation"]))
            seconds["estimation"] = time.perf_counter() - clock

    order = {key: i for i, key in enumerate(("ingest_vs_copy", "backfill_vs_course_loop", "history_365_vs_0",
                                              "big_batch_vs_copy", "big_batch_peak_mb", "wide_batch_vs_copy",
                                              "wide_columns_200_vs_20", "panel_query_max_ms",
                                              "estimate_error_vs_nannyml", "estimate_seconds_vs_nannyml"))}
    figures.sort(key=lambda figure: order.get(figure.key, len(order)))
    total = time.perf_counter() - started
    payload = {figure.key: figure.value.median for figure in figures}
    payload["figures"] = {figure.key: figure.as_json() for figure in figures}
    payload["run"] = {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": total,
        "seconds_per_benchmark": seconds,
        "quick": args.quick,
        "postgresql": server_version,
        "server": "embedded" if srv.embedded else "MODELWATCH_DATABASE_URL",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
    }
    if set(chosen) != set(ORDER):
        payload = merged_with_earlier(args.out, payload, chosen)
    common.write_results(args.out, payload)
    print(table(figures))
    print(f"\n{len(figures)} figures in {total / 60:.1f} min; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
