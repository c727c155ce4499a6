"""Benchmarks: accuracy and timing tables, run by hand (``python -m benchmarks.<name>``) or ``modman bench``."""
