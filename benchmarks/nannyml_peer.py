"""NannyML 0.13.1's own CBPE and DLE on the three shared NannyML datasets, batch by batch: the peer
modelwatch's estimates are checked against (tests) and timed against (benchmarks). Run in a venv
of its own, never imported by modelwatch or its tests:

    python3 -m venv benchmarks/.nannyml-venv
    benchmarks/.nannyml-venv/bin/pip install nannyml==0.13.1 statsmodels 'pandas<3'
    NML_DISABLE_USAGE_LOGGING=1 benchmarks/.nannyml-venv/bin/python benchmarks/nannyml_peer.py \
        --out python/tests/fixtures/nannyml_estimates.json

Chunks are modelwatch's batches: car_price and credit_card by day, work_from_home by week
(Monday to Sunday: pandas' period 'W'), keyed by the period's first day. `--dataset NAME
--no-output` fits and estimates one dataset and prints nothing: what the benchmark times as a
whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

DATA = Path(os.environ.get("NANNYML_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "nannyml"))

DATASETS = {
    "work_from_home": {
        "files": ("synthetic_sample_reference", "synthetic_sample_analysis", "synthetic_sample_analysis_gt"),
        "period": "W", "kind": "cbpe", "problem_type": "classification_binary",
        "y_pred_proba": "y_pred_proba", "y_true": "work_home_actual",
        "metrics": ["roc_auc", "accuracy", "precision", "recall", "f1"],
    },
    "credit_card": {
        "files": ("mc_reference", "mc_analysis", "mc_analysis_gt"),
        "period": "D", "kind": "cbpe", "problem_type": "classification_multiclass",
        "y_pred_proba": {"prepaid_card": "y_pred_proba_prepaid_card",
                         "highstreet_card": "y_pred_proba_highstreet_card",
                         "upmarket_card": "y_pred_proba_upmarket_card"},
        "y_true": "y_true", "metrics": ["roc_auc", "accuracy", "precision", "recall", "f1"],
    },
    "car_price": {
        "files": ("regression_synthetic_reference", "regression_synthetic_analysis",
                  "regression_synthetic_analysis_targets"),
        "period": "D", "kind": "dle", "y_true": "y_true",
        "features": ["car_age", "km_driven", "price_new", "accident_count", "door_count", "fuel", "transmission"],
        "metrics": ["mae", "rmse"],
    },
}


def run(name: str) -> dict:
    import nannyml as nml
    import pandas as pd

    spec = DATASETS[name]
    reference_file, analysis_file, targets_file = spec["files"]
    reference = pd.read_parquet(DATA / f"{reference_file}.parquet")
    analysis = pd.read_parquet(DATA / f"{analysis_file}.parquet").merge(
        pd.read_parquet(DATA / f"{targets_file}.parquet"), on="id", how="left")
    if spec["kind"] == "cbpe":
        estimator = nml.CBPE(y_pred_proba=spec["y_pred_proba"], y_pred="y_pred", y_true=spec["y_true"],
                             timestamp_column_name="timestamp", metrics=spec["metrics"],
                             chunk_period=spec["period"], problem_type=spec["problem_type"])
    else:
        estimator = nml.DLE(feature_column_names=spec["features"], y_pred="y_pred", y_true=spec["y_true"],
                            timestamp_column_name="timestamp", metrics=spec["metrics"], chunk_period=spec["period"])
    estimator.fit(reference)
    result = estimator.estimate(analysis).filter(period="analysis").to_df()
    batches = {}
    for _, row in result.iterrows():
        start = pd.Timestamp(row[("chunk", "start_date")]).date().isoformat()
        batches[start] = {metric: {"estimated": _number(row[(metric, "value")]),
                                   "realised": _number(row[(metric, "realized")]),
                                   "lower_threshold": _number(row[(metric, "lower_threshold")]),
                                   "upper_threshold": _number(row[(metric, "upper_threshold")]),
                                   "alert": bool(row[(metric, "alert")])}
                          for metric in spec["metrics"]}
    return batches


def _number(value: object) -> float | None:
    value = float(value)
    return None if value != value else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-output", action="store_true", help="fit and estimate only (for timing)")
    args = parser.parse_args(argv)
    names = args.dataset or list(DATASETS)
    figures = {}
    for name in names:
        clock = time.perf_counter()
        figures[name] = run(name)
        if not args.no_output:
            print(f"{name}: {len(figures[name])} batches in {time.perf_counter() - clock:.1f} s", file=sys.stderr)
    if args.no_output:
        return 0
    import nannyml

    document = {"nannyml_version": nannyml.__version__,
                "command": "NML_DISABLE_USAGE_LOGGING=1 benchmarks/.nannyml-venv/bin/python benchmarks/nannyml_peer.py "
                           "--out python/tests/fixtures/nannyml_estimates.json",
                "datasets": figures}
    text = json.dumps(document, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
