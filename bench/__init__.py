"""Benchmarks: commands that print one JSON object and a summary line (see README.md)."""
