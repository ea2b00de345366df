"""Benchmarks and long runs: ``python bench/run.py`` (figures), ``python bench/chaos.py`` (chaos)."""
