"""The exceptions modelwatch raises, each carrying the exit code the CLI uses.

    ModelwatchError            exit 3 unless a subclass says otherwise
    ├── UsageError             exit 2: bad arguments or configuration
    │   └── InputError         exit 2: an input file that cannot be used
    ├── ContractFailed         exit 1: the batch failed its data contract
    ├── DatabaseError          exit 3: PostgreSQL could not be reached or failed
    ├── DriftError             exit 3: the drift step's process failed
    └── TransformError         exit 3: dbt could not run
"""

from __future__ import annotations


class ModelwatchError(Exception):
    """Base class; `str(error)` is the one line shown to the user."""

    exit_code = 3


class UsageError(ModelwatchError):
    exit_code = 2


class InputError(UsageError):
    exit_code = 2


class ContractFailed(ModelwatchError):
    exit_code = 1


class DatabaseError(ModelwatchError):
    exit_code = 3


class DriftError(ModelwatchError):
    exit_code = 3


class TransformError(ModelwatchError):
    exit_code = 3
