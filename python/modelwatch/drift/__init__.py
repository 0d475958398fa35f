"""Against the reference set: Evidently's drift (in a worker process), performance estimation, the report."""
