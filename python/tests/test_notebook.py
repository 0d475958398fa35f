"""notebooks/debugging.ipynb runs top to bottom on the demo database (nbclient, a real
ipykernel), on the taxi's 2023-02-07, the day whose drift the demo is known for; its outputs are
checked against the marts it reads."""

from __future__ import annotations

import json
from typing import Any

import nbformat
import psycopg
import pytest
from nbclient import NotebookClient

from modelwatch.config import PROJECT_DIR, Settings

pytestmark = pytest.mark.once


NOTEBOOK = PROJECT_DIR / "notebooks" / "debugging.ipynb"
DAY = "2023-02-07"


def _outputs(cell: Any) -> list[dict[str, Any]]:
    return [dict(output) for output in cell.get("outputs", [])]


def _text(cell: Any) -> str:
    return "".join(output.get("text", "") for output in _outputs(cell) if output["output_type"] == "stream")


def _html(cell: Any) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in _outputs(cell)
                   if output["output_type"] in ("execute_result", "display_data"))


@pytest.fixture(scope="module")
def executed(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = f"MONITOR = 'nyc_taxi'\nBATCH_DATE = {DAY!r}"
    folder = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits the test's environment
        patch.setenv("MODELWATCH_HOME", str(demo_settings.home))
        patch.setenv("MODELWATCH_DATABASE_URL", demo_settings.database_url)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def test_every_cell_ran_without_error(executed: Any) -> None:
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert [output for cell in code for output in _outputs(cell) if output["output_type"] == "error"] == []
    assert _text(code[1]).startswith("monitor nyc_taxi, batch 2023-02-07: ")


def test_evidently_shown_inline_with_its_tests(executed: Any) -> None:
    (snapshot_cell,) = [cell for cell in executed.cells if cell.source.startswith("snapshot = ")]
    html = _html(snapshot_cell)
    assert "<iframe" in html or "evidently" in html.lower()
    (tests_cell,) = [cell for cell in executed.cells if cell.source.startswith("evidently_tests = ")]
    table = _html(tests_cell)
    rows = table.count("<tr") - 1  # the header
    statuses = {status: table.count(f"<td>{status}</td>") for status in ("SUCCESS", "FAIL", "WARNING", "ERROR")}
    assert rows > 20 and sum(statuses.values()) == rows  # every test shown, each with its outcome
    assert statuses["FAIL"] > 0  # passenger_count's missing values, at least, on the drifted day


def test_failing_checks_and_the_drift_table_equal_the_marts(executed: Any, demo_conn: psycopg.Connection) -> None:
    failing = demo_conn.execute(
        "select count(*) from marts.batch_checks where monitor = 'nyc_taxi' and batch_date = %s and not passed",
        (DAY,)).fetchone()[0]
    (checks_cell,) = [cell for cell in executed.cells if cell.source.startswith("def query(")]
    assert _text(checks_cell).splitlines() == [f"{failing} failing checks"]
    drifted = [name for (name,) in demo_conn.execute(
        "select distinct column_name from marts.feature_drift where monitor = 'nyc_taxi' and batch_date = %s"
        " and drifted order by 1", (DAY,)).fetchall()]
    assert len(drifted) >= 4  # the demo's drifted day: 4 of 7 columns by Evidently alone
    (drift_cell,) = [cell for cell in executed.cells if cell.source.startswith("drift_table = ")]
    assert _text(drift_cell).splitlines() == ["drifted: " + ", ".join(drifted)]
    rows = demo_conn.execute("select count(*) from marts.feature_drift where monitor = 'nyc_taxi'"
                             " and batch_date = %s", (DAY,)).fetchone()[0]
    assert _html(drift_cell).count("<tr") == rows + 1  # the header and one row per column and source


def test_one_plot_per_drifted_column(executed: Any, demo_conn: psycopg.Connection) -> None:
    drifted = [name for (name,) in demo_conn.execute(
        "select distinct column_name from marts.feature_drift where monitor = 'nyc_taxi' and batch_date = %s"
        " and drifted order by 1", (DAY,)).fetchall()]
    plots = [output for output in _outputs(executed.cells[-1])
             if "application/vnd.plotly.v1+json" in output.get("data", {})]  # not plotly.js's loader
    assert len(plots) == len(drifted)
    titles = [json.loads(json.dumps(plot["data"]["application/vnd.plotly.v1+json"]))["layout"]["title"]["text"]
              for plot in plots]
    assert titles == [f"nyc_taxi: {name}, batch {DAY} against its reference" for name in drifted]
