"""What a range of batches reports while it runs: how many there are, each one loaded, and the
phase it is in (loading, drift, the dbt build). The CLI draws it; the library only calls it."""

from __future__ import annotations

from datetime import date
from typing import Protocol


class Progress(Protocol):
    def total(self, batches: int) -> None:
        """The number of batches this run covers (skipped ones included)."""

    def loaded(self, day: date) -> None:
        """One batch loaded (or skipped, being done already)."""

    def phase(self, text: str) -> None:
        """What runs now, e.g. `dbt build: the marts that read drift`."""


class Silent:
    """A Progress that reports nothing."""

    def total(self, batches: int) -> None:
        pass

    def loaded(self, day: date) -> None:
        pass

    def phase(self, text: str) -> None:
        pass


SILENT = Silent()
