"""Benchmarks that measure the plugin against stock MLflow in the same run."""
