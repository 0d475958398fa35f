"""`modelwatch new`: a project of one's own that uses modelwatch's models as a dbt package."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from modelwatch.cli import main
from modelwatch.config import Settings

from .conftest import nannyml_file

pytestmark = pytest.mark.once  # not again in make test-pg15: the server makes no difference here

DECLARATION = """\
    car_price:
      task: regression
      id: id
      timestamp: timestamp
      features:
        numeric: [car_age, km_driven, price_new, accident_count, door_count]
        categorical: [fuel, transmission]
      prediction: y_pred
      target: y_true
"""


def _labelled_analysis(path: Path) -> Path:
    """NannyML's analysis period with its late labels joined on: batches with a target."""
    analysis = pq.read_table(nannyml_file("regression_synthetic_analysis.parquet"))
    targets = pq.read_table(nannyml_file("regression_synthetic_analysis_targets.parquet"))
    pq.write_table(analysis.join(targets, "id"), path)
    return path


def _mae(path: Path, day: date) -> tuple[int, float]:
    table = pq.read_table(path)
    rows = table.filter(pc.equal(pc.cast(table["timestamp"], pa.date32()), day))
    errors = pc.abs(pc.subtract(rows["y_true"], rows["y_pred"])).to_numpy()
    return rows.num_rows, float(errors.mean())


def test_new_project_then_init_reference_backfill_dbt_build_run(fresh_settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "myproj"
    made = CliRunner().invoke(main, ["new", str(folder)])
    assert made.exit_code == 0, made.output
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        ".gitignore", "README.md", "dbt_project.yml", "macros/generate_schema_name.sql", "packages.yml",
        "profiles.yml"]
    project = (folder / "dbt_project.yml").read_text()
    assert "    # my_model:\n" in project  # the one commented example
    again = CliRunner().invoke(main, ["new", str(folder)])
    assert again.exit_code == 2 and again.stderr == f"Error: {folder}: exists and is not an empty folder\n"

    monkeypatch.chdir(folder)  # the project is the current folder's
    env = {"MODELWATCH_DATABASE_URL": fresh_settings.database_url, "MODELWATCH_HOME": str(folder / ".modelwatch"),
           "MODELWATCH_PROJECT_DIR": ""}

    def invoke(*args: str):
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result

    bare = CliRunner().invoke(main, ["init"], env=env)
    assert bare.exit_code == 2 and bare.stderr == (
        f"Error: {folder / 'dbt_project.yml'}: declares no monitor under vars.monitors (uncomment the example "
        "or add one)\n")
    (folder / "dbt_project.yml").write_text(project.replace("\n  monitors:\n", "\n  monitors:\n" + DECLARATION, 1))
    invoke("init")
    invoke("reference", "--file", str(nannyml_file("regression_synthetic_reference.parquet")))  # its only monitor
    batches = _labelled_analysis(tmp_path / "labelled.parquet")
    backfill = json.loads(invoke("backfill", "--file", str(batches), "--start", "2017-02-27", "--end", "2017-02-28",
                                 "--json").stdout)
    days = [date(2017, 2, 27), date(2017, 2, 28)]
    assert [(b["batch_date"], b["rows_loaded"]) for b in backfill["batches"]] == [
        (day.isoformat(), _mae(batches, day)[0]) for day in days]
    assert {b["status"] for b in backfill["batches"]} <= {"passed", "warned"}

    built = invoke("dbt", "build")
    assert "ERROR=0" in built.stdout
    run = json.loads(invoke("run", "--batch-date", "2017-03-01", "--file", str(batches), "--json").stdout)
    rows, mae = _mae(batches, date(2017, 3, 1))
    assert run["rows_loaded"] == rows and run["status"] in ("passed", "warned")

    with psycopg.connect(fresh_settings.database_url) as conn:
        measured = dict(conn.execute(
            "select batch_date, value from marts.model_performance where monitor = 'car_price' and metric = 'mae'"
        ).fetchall())
        assert sorted(measured) == [*days, date(2017, 3, 1)]
        assert abs(measured[date(2017, 3, 1)] - mae) < 1e-9 * mae
        assert abs(measured[days[0]] - _mae(batches, days[0])[1]) < 1e-9 * measured[days[0]]
        assert conn.execute("select count(*) from marts.batch_health where monitor = 'car_price'").fetchone() == (3,)
        # modelwatch's own examples stay out of a project of one's own
        assert conn.execute("select to_regclass('raw.nyc_taxi__rows'), to_regclass('staging.taxi_zones'),"
                            " to_regclass('marts.daily_trips')").fetchone() == (None, None, None)
    assert (folder / "dbt_packages" / "modelwatch").resolve() == _package_dir()


def _package_dir() -> Path:
    from modelwatch.config import PROJECT_DIR

    return PROJECT_DIR.resolve()
