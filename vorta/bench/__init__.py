"""Benchmarks (GPU; the end-to-end one also has a CPU smoke mode).  Entry point:

    python -m comfyui_vorta.vorta.bench {e2e,kernels,profile,transfer,calibrate} [args...]

* ``e2e``      — step time of real Wan / HunyuanVideo architectures inside ComfyUI (``e2e.py``)
* ``kernels``  — the sparse kernels against SDPA, FlexAttention and the PyTorch reference (``kernels.py``)
* ``profile``  — where one routed attention call spends its time (``profile_routed.py``)
* ``transfer`` — calibrated decisions on schedules not used in calibration (CPU, ``calibration_transfer.py``)
* ``calibrate`` — a calibrated step's time and peak memory against a dense step (``calibration_cost.py``)
"""
