"""Smoke tests of the benchmarks in bench/ (smallest size: they must not rot)."""
