"""Benchmarks (GPU): kernels now, end-to-end later."""
