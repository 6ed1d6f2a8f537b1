"""Prometheus, alert rules and Grafana for the rating service; see README.md."""
