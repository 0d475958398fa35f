"""The stored model: read back without scikit-learn, predicting as scikit-learn does to the bit,
and an artifact that is anything else refused before it can run."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from modelwatch.config import Settings
from modelwatch.errors import UsageError
from modelwatch.examples.nyc_taxi import model
from modelwatch.pipeline.source import read_batch_file

from .conftest import FEBRUARY, TAXI

# Loads the taxi's latest model from the database in argv[1], scores February, and says whether
# scikit-learn got imported on the way.
_SCORE_IN_A_FRESH_PROCESS = """
import sys, numpy as np, psycopg
from modelwatch.config import Settings
from modelwatch.examples.nyc_taxi import model
from modelwatch.pipeline.source import read_batch_file
monitor = Settings.from_env({}).monitor(sys.argv[4])
with psycopg.connect(sys.argv[1]) as conn:
    trained = model.load_latest(conn, monitor.name)
np.save(sys.argv[2], trained.predict_table(read_batch_file(sys.argv[3], monitor).table))
print("sklearn" in sys.modules)
"""


def test_a_stored_model_predicts_as_scikit_learn_without_importing_it(trained_settings: Settings,
                                                                       tmp_path: Path) -> None:
    with psycopg.connect(trained_settings.database_url) as conn:
        version, artifact = conn.execute("select version, artifact from raw.models where monitor = %s",
                                         (TAXI,)).fetchone()
    table = read_batch_file(FEBRUARY, trained_settings.monitor(TAXI)).table
    expected = pickle.loads(artifact).predict(model.feature_matrix(table, model.FEATURES))  # scikit-learn's own
    out = tmp_path / "predictions.npy"
    run = subprocess.run([sys.executable, "-c", _SCORE_IN_A_FRESH_PROCESS, trained_settings.database_url,
                          str(out), str(FEBRUARY), TAXI], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"  # scoring never imported scikit-learn
    predictions = np.load(out)
    assert predictions.shape == (64_809,)
    assert predictions.tobytes() == expected.tobytes()  # the same to the bit
    # ...and the same as scikit-learn's pandas path that training uses
    frame = model.feature_frame(table, model.FEATURES)
    assert predictions.tobytes() == model.predict(pickle.loads(artifact), model.FEATURES, frame).tobytes()


class _Hostile:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch hostile-artifact-ran",))


def test_an_artifact_that_is_not_a_linear_regression_is_refused_unrun(trained_settings: Settings,
                                                                       tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with psycopg.connect(trained_settings.database_url) as conn:
        version, artifact = conn.execute("select version, artifact from raw.models where monitor = %s",
                                         (TAXI,)).fetchone()
        conn.execute("update raw.models set artifact = %s where monitor = %s", (pickle.dumps(_Hostile()), TAXI))
        with pytest.raises(UsageError, match=f"model {version}: its artifact is not a scikit-learn "
                                             r"LinearRegression \(it refers to (posix|os)\.system\)"):
            model.load_latest(conn, TAXI)
        for other in (pickle.dumps({"coef_": [1.0]}), pickle.dumps(np.arange(3.0))):  # no model in it
            conn.execute("update raw.models set artifact = %s where monitor = %s", (other, TAXI))
            with pytest.raises(UsageError, match="not a fitted scikit-learn LinearRegression"):
                model.load_latest(conn, TAXI)
        conn.execute("update raw.models set artifact = %s where monitor = %s",
                     (artifact[: len(artifact) // 2], TAXI))  # cut short
        with pytest.raises(UsageError, match=f"model {version}: its artifact is not a scikit-learn LinearRegression"):
            model.load_latest(conn, TAXI)
    assert not (tmp_path / "hostile-artifact-ran").exists()
