"""The trigger's hardware: the FPGA's fixed-point arithmetic, emulated bit for bit (`fixed_point`), and a run's
networks exported for it (`export`: the hardware simulation's format; `onnx_export`: the float networks as ONNX).

Below training and judging, which both use it, above the run folder; it needs only numpy and torch (and onnx
with onnxruntime for the ONNX export, imported by that module alone).
"""
