"""docker compose without Docker (no engine runs on these machines): the compose file's shape
(the Compose Specification's top-level and service keys, short port syntax, named volumes,
dependencies), the Dockerfile's settings, and the pipeline service's entrypoint run as a script
with the environment the container would give it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from modelwatch.config import PROJECT_DIR
from modelwatch.postgres import db

from .conftest import scratch_name

COMPOSE = PROJECT_DIR / "docker-compose.yml"
DOCKERFILE = PROJECT_DIR / "Dockerfile"
ENTRYPOINT = PROJECT_DIR / "docker" / "pipeline.sh"
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {"image", "build", "environment", "ports", "volumes", "depends_on", "healthcheck", "restart",
                "profiles", "entrypoint", "command", "env_file"}
PORT = re.compile(r"^127\.0\.0\.1:\$\{[A-Z_]+:-[0-9]+\}:[0-9]+$")  # host side on loopback only


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfile() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, argument in _dockerfile():
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(argument)))
    return env


def test_the_compose_file_has_the_specifications_shape() -> None:
    compose = _compose()
    assert set(compose) <= TOP_LEVEL and re.match(r"^[a-z0-9][a-z0-9_-]*$", compose["name"])
    named_volumes = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, name
        assert ("image" in service) != ("build" in service), name
        assert all(PORT.match(port) for port in service.get("ports", [])), name
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source.startswith((".", "$")) or source in named_volumes, (name, mount)
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in compose["services"] and condition["condition"] in (
                "service_started", "service_healthy", "service_completed_successfully"), name
        assert all(isinstance(value, str) for value in service.get("environment", {}).values()), name


def test_every_variable_compose_reads_is_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in (PROJECT_DIR / ".env.example").read_text().splitlines()
               if re.match(r"^[A-Z_]+=", line)}
    assert used - example == set()


def test_the_pipeline_service_and_its_image() -> None:
    services = _compose()["services"]
    pipeline = services["pipeline"]
    assert pipeline["build"] == "."
    assert pipeline["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert pipeline["environment"]["MODELWATCH_DATABASE_URL"].endswith("@postgres:5432/modelwatch")
    # Grafana logs in with the password the pipeline's `init` gives the reader role
    assert "MODELWATCH_READER_PASSWORD" in pipeline["environment"]
    assert "MODELWATCH_READER_PASSWORD" in services["grafana"]["environment"]
    assert services["prefect"]["profiles"] == ["prefect"]
    instructions = dict(_dockerfile())
    assert instructions["FROM"].startswith("python:3.11")
    assert json.loads(instructions["ENTRYPOINT"]) == ["/opt/modelwatch/docker/pipeline.sh"]
    assert "pip install '.[prefect]'" in instructions["RUN"]
    assert _dockerfile_env()["MODELWATCH_PROJECT_DIR"] == "/opt/modelwatch"  # where COPY puts the project
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.mark.once
def test_the_entrypoint_initialises_runs_the_demo_and_serves(server_url: str, tmp_path: Path) -> None:
    """docker/pipeline.sh as the container runs it, this checkout standing for /opt/modelwatch."""
    home = tmp_path / "home"
    with db.scratch_database(server_url, scratch_name("mw_compose")) as url:
        service = _compose()["services"]["pipeline"]["environment"]
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELWATCH_", "PREFECT_"))}
        env.update(_dockerfile_env())
        env.update({
            "MODELWATCH_PROJECT_DIR": str(PROJECT_DIR),
            "MODELWATCH_HOME": str(home),
            "MODELWATCH_DATABASE_URL": url,
            "MODELWATCH_READER_PASSWORD": "reader-secret",
            "MODELWATCH_SCHEDULE_CRON": "0 6 * * *",
            "PREFECT_API_URL": "",  # compose's default: no Prefect server
            "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
        })
        assert {"MODELWATCH_SCHEDULE_MONITOR", "MODELWATCH_SCHEDULE_CRON", "PREFECT_API_URL"} <= set(service)
        process = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 600
            for line in process.stdout:
                lines.append(line.rstrip())
                if line.startswith("pipeline: serving") or time.monotonic() > deadline:
                    break
            time.sleep(5)  # `serve` registering its deployment
            assert process.poll() is None, "\n".join(lines[-20:])
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        assert f"pipeline: serving nyc_taxi on '0 6 * * *' for files in {home / 'incoming'}" in lines
        assert (home / "demo.done").exists() and (home / "incoming").is_dir()
        with psycopg.connect(url) as conn:
            statuses = conn.execute("select status, count(*) from marts.batch_health where monitor = 'nyc_taxi'"
                                    " group by 1").fetchall()
        assert sum(count for _, count in statuses) == 28
        with db.connect_as_reader(url) as reader:  # the role Grafana logs in as exists and reads the marts
            assert reader.execute("select count(*) from marts.batch_health").fetchone() == (28,)
