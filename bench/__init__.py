"""Benchmarks of carcelery: ``python -m bench.pipeline --help``."""
