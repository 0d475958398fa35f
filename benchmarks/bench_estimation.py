"""Performance estimation against NannyML 0.13.1 on the three shared NannyML datasets.

estimate_error_vs_nannyml: per dataset, over its analysis batches (modelwatch's batches, NannyML
chunked the same way), the mean |estimated - realised| of modelwatch's estimates divided by
NannyML's on the same batches and metrics; the figure is the worst dataset's.

estimate_seconds_vs_nannyml: modelwatch's fit on the reference plus the estimation of every batch
(benchmarks/estimate_child.py), against NannyML's fit plus estimate of the same data
(benchmarks/nannyml_peer.py --no-output), each as a whole process, summed over the datasets.
Rows are loaded (and labelled) beforehand, untimed: both sides start from data at hand.

NannyML runs in a venv of its own (benchmarks/.nannyml-venv, see nannyml_peer.py); without it
the figures are not valid.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import psycopg

import common
from common import Figure, Spread, log

HERE = Path(__file__).resolve().parent
PEER_PYTHON = Path(os.environ.get("NANNYML_PYTHON", HERE / ".nannyml-venv" / "bin" / "python"))
DATASETS = {  # monitor -> reference, analysis, targets
    "work_from_home": ("synthetic_sample_reference", "synthetic_sample_analysis", "synthetic_sample_analysis_gt"),
    "credit_card": ("mc_reference", "mc_analysis", "mc_analysis_gt"),
    "car_price": ("regression_synthetic_reference", "regression_synthetic_analysis",
                  "regression_synthetic_analysis_targets"),
}
NANNYML_DATA = common.REPO.parent / "shared" / "data" / "nannyml"


def _peer(args: list[str]) -> common.ChildRun:
    env = dict(os.environ, NML_DISABLE_USAGE_LOGGING="1")
    return common.run_child([str(PEER_PYTHON), str(HERE / "nannyml_peer.py"), *args], env=env)


def _prepare(db: common.Database, monitor: str) -> None:
    """Untimed: the reference stored, every analysis batch run without targets, then labelled."""
    from modelwatch import pipeline
    from modelwatch.pipeline.labels import store_labels

    reference, analysis, targets = DATASETS[monitor]
    pipeline.init(db.settings)
    pipeline.reference(db.settings, monitor, NANNYML_DATA / f"{reference}.parquet")
    pipeline.backfill(db.settings, NANNYML_DATA / f"{analysis}.parquet", monitor_name=monitor)
    store_labels(db.settings, monitor, NANNYML_DATA / f"{targets}.parquet")


def run(srv: common.Server, repeats: int = 1) -> list[Figure]:
    if not PEER_PYTHON.exists():
        raise RuntimeError(f"NannyML's venv is missing ({PEER_PYTHON}): see benchmarks/nannyml_peer.py")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "peer.json"
        _peer(["--out", str(out)])
        peer = json.loads(out.read_text())["datasets"]
    errors: dict[str, dict[str, float]] = {}
    mine_seconds: list[float] = [0.0] * repeats
    theirs_seconds: list[float] = [0.0] * repeats
    per_dataset_seconds: dict[str, dict[str, list[float]]] = {}
    for monitor in DATASETS:
        log(f"estimation: {monitor}: loading and labelling its batches")
        with common.fresh_database(srv, f"est_{monitor[:6]}") as db:
            _prepare(db, monitor)
            with psycopg.connect(db.url) as conn:
                rows = conn.execute("select batch_date, metric, estimated_value, realised_value"
                                    " from marts.estimated_performance where monitor = %s", (monitor,)).fetchall()
            mine, theirs = [], []
            for day, metric, estimated, _ in rows:
                other = peer[monitor].get(day.isoformat(), {}).get(metric)
                if other is None or other["realised"] is None or other["estimated"] is None or estimated is None:
                    continue
                mine.append(abs(estimated - other["realised"]))
                theirs.append(abs(other["estimated"] - other["realised"]))
            errors[monitor] = {"modelwatch": sum(mine) / len(mine), "nannyml": sum(theirs) / len(theirs),
                               "compared": len(mine)}
            errors[monitor]["ratio"] = errors[monitor]["modelwatch"] / errors[monitor]["nannyml"]
            times = per_dataset_seconds[monitor] = {"modelwatch": [], "nannyml": []}
            for index in range(repeats):
                ours = common.run_child([sys.executable, str(HERE / "estimate_child.py"), monitor], env=db.env())
                other = _peer(["--dataset", monitor, "--no-output"])
                times["modelwatch"].append(ours.seconds)
                times["nannyml"].append(other.seconds)
                mine_seconds[index] += ours.seconds
                theirs_seconds[index] += other.seconds
            log(f"estimation: {monitor}: error ratio {errors[monitor]['ratio']:.4f}, seconds "
                f"{times['modelwatch']} vs {times['nannyml']}")
    worst = max(errors, key=lambda name: errors[name]["ratio"])
    return [
        Figure("estimate_error_vs_nannyml", "estimate's mean |estimated - realised|, modelwatch / NannyML (worst dataset)",
               Spread.of([errors[worst]["ratio"]]), "x", "<= 1.1", details={"datasets": errors, "worst": worst},
               note="per batch and metric on the datasets' analysis batches; NannyML 0.13.1 in its own venv"),
        Figure("estimate_seconds_vs_nannyml", "fit + estimate of every batch, modelwatch / NannyML (whole processes)",
               common.ratio_spread(mine_seconds, theirs_seconds), "x", "<= 0.5",
               details={"modelwatch_seconds": mine_seconds, "nannyml_seconds": theirs_seconds,
                        "per_dataset": per_dataset_seconds}),
    ]
