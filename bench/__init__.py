"""Benchmarks that print figures (`python -m bench.<name>`); see bench/README.md."""
