"""The MLOps Zoomcamp monitoring module's loop, reimplemented as the baseline.

DataTalksClub/mlops-zoomcamp 05-monitoring/post-evidently-0.7/
evidently_metrics_calculation.py (and its homework variant with the p50 fare)
on the Evidently 0.7 API, without Prefect and without the 10 s sleeps: per
day, filter the day's rows, predict, build the current and reference
Datasets, run one Report (ValueDrift of the prediction, DriftedColumnsCount,
MissingValueCount of the prediction, QuantileValue of fare_amount at 0.5),
read four numbers and INSERT them as one row, on a new connection as the
course does.

`prepare()` is the course's notebook (train on the month's first 30,000
filtered rows, the rest with predictions is the reference) and is not timed;
`main()` is the script and is timed as a whole process, imports included.

Run: python course_loop.py DATABASE_URL WORKDIR CURRENT.parquet YEAR MONTH DAYS
"""

from __future__ import annotations

import sys
from pathlib import Path

NUM_FEATURES = ["passenger_count", "trip_distance", "fare_amount", "total_amount"]
CAT_FEATURES = ["PULocationID", "DOLocationID"]

CREATE_TABLE = """
drop table if exists dummy_metrics;
create table dummy_metrics(
    timestamp timestamp,
    prediction_drift float,
    num_drifted_columns integer,
    share_missing_values float,
    fare_p50 float
)
"""


def prepare(reference_month: Path, workdir: Path) -> int:
    """The course's notebook: baseline model and reference set. Returns the reference rows."""
    import pickle

    import pandas as pd
    from sklearn.linear_model import LinearRegression

    data = pd.read_parquet(reference_month)
    data["duration_min"] = (data.lpep_dropoff_datetime - data.lpep_pickup_datetime).dt.total_seconds() / 60
    data = data[(data.duration_min >= 0) & (data.duration_min <= 60)]
    data = data[(data.passenger_count > 0) & (data.passenger_count <= 8)]
    train, reference = data[:30000], data[30000:].copy()
    model = LinearRegression().fit(train[NUM_FEATURES + CAT_FEATURES], train["duration_min"])
    reference["prediction"] = model.predict(reference[NUM_FEATURES + CAT_FEATURES])
    reference.to_parquet(workdir / "reference.parquet")
    (workdir / "lin_reg.bin").write_bytes(pickle.dumps(model))
    return len(reference)


def main(url: str, workdir: Path, current: Path, year: int, month: int, days: int) -> None:
    import datetime
    import pickle

    import pandas as pd
    import psycopg
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, MissingValueCount, QuantileValue, ValueDrift

    reference_data = pd.read_parquet(workdir / "reference.parquet")
    model = pickle.loads((workdir / "lin_reg.bin").read_bytes())
    raw_data = pd.read_parquet(current)

    begin = datetime.datetime(year, month, 1, 0, 0)
    data_definition = DataDefinition(numerical_columns=NUM_FEATURES + ["prediction"],
                                      categorical_columns=CAT_FEATURES)
    report = Report(metrics=[
        ValueDrift(column="prediction"),
        DriftedColumnsCount(),
        MissingValueCount(column="prediction"),
        QuantileValue(column="fare_amount", quantile=0.5),
    ])

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CREATE_TABLE)

    for i in range(days):
        current_data = raw_data[(raw_data.lpep_pickup_datetime >= (begin + datetime.timedelta(i)))
                                & (raw_data.lpep_pickup_datetime < (begin + datetime.timedelta(i + 1)))].copy()
        current_data["prediction"] = model.predict(current_data[NUM_FEATURES + CAT_FEATURES].fillna(0))
        current_dataset = Dataset.from_pandas(current_data, data_definition=data_definition)
        reference_dataset = Dataset.from_pandas(reference_data, data_definition=data_definition)
        run = report.run(reference_data=reference_dataset, current_data=current_dataset)
        result = run.dict()
        prediction_drift = result["metrics"][0]["value"]
        num_drifted_columns = result["metrics"][1]["value"]["count"]
        share_missing_values = result["metrics"][2]["value"]["share"]
        fare_p50 = result["metrics"][3]["value"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into dummy_metrics(timestamp, prediction_drift, num_drifted_columns,"
                " share_missing_values, fare_p50) values (%s, %s, %s, %s, %s)",
                (begin + datetime.timedelta(i), prediction_drift, num_drifted_columns, share_missing_values,
                 fare_p50),
            )


if __name__ == "__main__":
    url_arg, workdir_arg, current_arg, year_arg, month_arg, days_arg = sys.argv[1:7]
    main(url_arg, Path(workdir_arg), Path(current_arg), int(year_arg), int(month_arg), int(days_arg))
