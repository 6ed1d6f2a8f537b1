"""Deployment files for users of the service (monitoring stack)."""
