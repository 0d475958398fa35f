"""modelwatch: batch model monitoring on PostgreSQL and dbt."""

__version__ = "0.1.0"
