"""What modelwatch changes in dbt's compilation, for a process that invokes dbt many times.

The process parses the project once and hands the manifest to every invocation
(transform._manifest), while dbt compiles into the manifest's nodes; and dbt
injects an ephemeral model's CTE (int_batch_rows) by parsing the whole
compiled statement with sqlparse, which on a wide monitor's int_numeric_profile
(80 kB of SQL) takes 0.4 s of the interpreter on every build.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

# Blank lines and SQL comments, then WITH (not WITH RECURSIVE) as a word of its own and the
# blanks after it: dbt's parse inserts the CTEs before the token that follows them. Possessive,
# so that a statement that does not start so fails at once (no backtracking into the comments,
# and no comment read past its end).
_LEADING_WITH = re.compile(r"(?:\s++|--[^\n\r]*+(?:\n|\Z)|/\*(?:(?!\*/).)*+\*/)*+with(?=\s)(?!\s+recursive\b)\s*",
                           re.IGNORECASE | re.DOTALL)


def uncompiled(manifest: Any) -> Any:
    """The parsed manifest with what an earlier invocation compiled into it undone. dbt compiles
    into the nodes themselves: an ephemeral model compiled once is injected as it is into every
    later model (with the batch vars of its first invocation), and a model whose ephemeral CTEs
    were injected once gets none the next time it is compiled."""
    for node in manifest.nodes.values():
        if "extra_ctes" in getattr(node, "__dataclass_fields__", {}):
            node.compiled = False
            node.compiled_code = None
            node.extra_ctes_injected = False
            node.extra_ctes = []
            node._pre_injected_sql = None  # noqa: SLF001 - dbt's own field, set with the CTEs
    return manifest


def spliced_ctes(original: Callable[[str, Sequence[Any]], str]) -> Callable[[str, Sequence[Any]], str]:
    """dbt's inject_ctes_into_sql, which parses the statement to find its top-level WITH, made a
    splice where the statement starts with WITH (after blank lines and comments): the CTEs go
    after that keyword and its blanks, followed by a comma, which is the string dbt's parse
    gives. Any other statement goes to dbt's own function."""

    def inject(sql: str, ctes: Sequence[Any]) -> str:
        # dbt keeps the first statement only, and sqlparse ends a comment at a bare \r
        leading_with = _LEADING_WITH.match(sql) if ctes and ";" not in sql and "\r" not in sql else None
        if leading_with is None:
            return original(sql, ctes)
        end = leading_with.end()
        return sql[:end] + ", ".join(cte.sql for cte in ctes) + ", " + sql[end:]

    inject.original = original  # type: ignore[attr-defined]
    return inject


def splice_ctes() -> None:
    """Have dbt's compiler inject ephemeral CTEs by splicing (spliced_ctes), once per process."""
    from dbt import compilation

    if not hasattr(compilation.inject_ctes_into_sql, "original"):
        compilation.inject_ctes_into_sql = spliced_ctes(compilation.inject_ctes_into_sql)
