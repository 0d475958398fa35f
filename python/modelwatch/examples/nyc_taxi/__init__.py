"""The nyc_taxi monitor: NYC green-taxi trips and the MLOps Zoomcamp's trip-duration model."""
