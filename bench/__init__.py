"""Measurements, not tests: the fault-injection suite (`make chaos`) and the benchmark with its
comparators (`make bench`)."""
