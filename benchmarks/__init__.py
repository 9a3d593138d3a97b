"""accelir's benchmarks: the peer comparison (``python -m benchmarks.run``) and per-component timings."""
