"""Benchmarks behind `edgepipe bench ...`: every speed is reported as a ratio against a baseline
measured in the same run, never as an absolute pass/fail time."""
