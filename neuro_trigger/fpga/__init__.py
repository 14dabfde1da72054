"""The trigger's hardware: the FPGA's fixed-point arithmetic, emulated bit for bit (`fixed_point`).

Below training and judging, which both use it, above the run folder; it needs only numpy and torch.
"""
