"""Prefect flows that chain the DVC stages."""
