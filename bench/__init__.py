"""Macro benchmarks: load scenarios run by `sluice bench` against the bridge and the raw-relay baseline."""
