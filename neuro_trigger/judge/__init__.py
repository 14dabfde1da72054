"""Judging networks: metrics, figures, overlays, reports, evaluation on new data and comparison of runs.

Judging only reads run folders (`neuro_trigger.run`) and data (`neuro_trigger.data`); nothing here trains.
"""
