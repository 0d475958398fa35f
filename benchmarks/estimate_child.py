"""The process bench_estimation times for modelwatch: fit what estimation needs on a monitor's
stored reference set, then estimate every stored batch (DLE's loss models per batch, then the
dbt models of the estimate over the whole range). Environment: MODELWATCH_DATABASE_URL,
MODELWATCH_HOME, MODELWATCH_PROJECT_DIR; argument: the monitor."""

from __future__ import annotations

import sys

from modelwatch import transform
from modelwatch.config import Settings
from modelwatch.drift import dle, estimation
from modelwatch.pipeline import load
from modelwatch.postgres import db


def main(monitor_name: str) -> int:
    settings = Settings.from_env()
    monitor = settings.monitor(monitor_name)
    url = db.database_url(settings)
    with db.connect(url, autocommit=True) as conn:
        version = load.latest_reference(conn, monitor)
        with conn.transaction():
            estimation.fit_reference(conn, monitor, version)
        days = [day for (day,) in conn.execute(
            "select batch_date from raw.batches where monitor = %s order by 1", (monitor.name,))]
        if monitor.task == "regression":
            models: dict = {}
            for day in days:
                dle.estimate_batch(conn, monitor, day, version, models)
    result = transform.invoke(settings, url, ["run", "--select", "int_batch_rows", "int_estimated_performance",
                                              "--vars", transform.batch_vars(monitor.name, days[0], days[-1])])
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
