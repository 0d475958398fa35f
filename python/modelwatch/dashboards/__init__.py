"""Grafana's dashboards and alert rules as data, and the static dashboard page."""
