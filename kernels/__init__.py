"""Triton kernels for the sparse branches; each names the reference function in ``vorta.reference`` it equals."""
