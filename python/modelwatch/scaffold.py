"""`modelwatch new DIR`: a monitoring project of one's own.

The project is a dbt project that uses modelwatch's generic models, macros and tests as a dbt
package (packages.yml, `local:` the project shipped inside the installed modelwatch, found
from MODELWATCH_PACKAGE_DIR, which modelwatch sets for dbt): upgrading modelwatch upgrades
the models. The user's dbt_project.yml holds the monitors; every other var (the contract's
defaults, drift settings) comes from the package unless the project sets it.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelwatch.config import PACKAGE_PROJECT_ENV, PROJECT_DIR
from modelwatch.errors import UsageError

PACKAGE_NAME = "modelwatch"  # the package's dbt project name: its macros are modelwatch.<macro>

DBT_PROJECT = """\
name: {name}
version: "0.1.0"
config-version: 2
require-dbt-version: [">=1.11.0", "<1.12.0"]
profile: modelwatch

flags:
  send_anonymous_usage_stats: false
  partial_parse: true

# modelwatch's generic models come as a dbt package (packages.yml); modelwatch installs it
# (`dbt deps`) before its first build here. Its examples' own models stay out.
models:
  modelwatch:
    monitors:
      +enabled: false
seeds:
  modelwatch:
    +enabled: false

vars:
  # The monitor a command works on when --monitor is left out (null: the first one declared).
  default_monitor: null

  # One block per model you monitor, then `modelwatch init`. Every key but these has a default
  # (docs/monitors.md in modelwatch's repository); the files are parquet or CSV.
  monitors:
    # my_model:
    #   task: regression            # regression | binary_classification | multiclass_classification
    #   id: id                      # unique row id within a batch
    #   timestamp: timestamp        # places each row in its batch
    #   batch_period: day           # day | week | month
    #   features:
    #     numeric: [age, income]
    #     categorical: [region]
    #   prediction: y_pred          # classifiers also declare probability
    #   target: y_true              # a file may lack it (labels that land late)
"""

PACKAGES = f"""\
# modelwatch's generic models, macros and tests: the dbt project inside the installed
# modelwatch (modelwatch sets {PACKAGE_PROJECT_ENV} for dbt; `modelwatch db env` prints it).
packages:
  - local: "{{{{ env_var('{PACKAGE_PROJECT_ENV}') }}}}"
"""

SCHEMA_MACRO = """\
{#- The package's schema names (raw / staging / marts / audit for the pipeline target): dbt takes
    generate_schema_name from the root project only. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ modelwatch.generate_schema_name(custom_schema_name, node) }}
{%- endmacro %}
"""

README = """\
# {name}

A modelwatch monitoring project: the monitors are declared in `dbt_project.yml`
(`vars.monitors`), the models come from modelwatch's dbt package.

1. Declare your model under `vars.monitors` in `dbt_project.yml` (uncomment the example).
2. `modelwatch reference --monitor NAME --file reference.parquet`: its reference set
   (the first command creates the database's schemas and tables; `modelwatch init` does it
   again after declaring another monitor).
3. `modelwatch backfill --monitor NAME --file batches.parquet`: every batch of the file;
   `modelwatch status` lists them, `modelwatch dbt build` runs dbt on this project by hand.

Run the commands in this folder (or pass `--project` / set `MODELWATCH_PROJECT_DIR`).
The embedded PostgreSQL lives in `.modelwatch/`; `MODELWATCH_DATABASE_URL` picks
another server. Plain `dbt` works here after `eval "$(modelwatch db env)"`.
"""

GITIGNORE = """\
# selectors.yml is the package's, copied in by modelwatch (dbt reads a root project's only)
selectors.yml
.modelwatch/
target/
logs/
dbt_packages/
package-lock.yml
"""


def project_name(folder: Path) -> str:
    """A dbt project name from the folder's: letters, digits and underscores, not a digit first."""
    name = re.sub(r"\W+", "_", folder.name.lower()).strip("_") or "monitoring"
    return name if not name[0].isdigit() else f"p_{name}"


def new_project(folder: Path) -> list[Path]:
    """Write the project's files into `folder` (new or empty); returns them."""
    folder = folder.expanduser().resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder}: exists and is not an empty folder")
    name = project_name(folder)
    if name == PACKAGE_NAME:
        raise UsageError(f"{folder}: a project may not be named {PACKAGE_NAME!r} (the package's name)")
    files = {
        "dbt_project.yml": DBT_PROJECT.format(name=name),
        "packages.yml": PACKAGES,
        "profiles.yml": (PROJECT_DIR / "profiles" / "profiles.yml").read_text(),
        "macros/generate_schema_name.sql": SCHEMA_MACRO,
        "README.md": README.format(name=name),
        ".gitignore": GITIGNORE,
    }
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
