"""Judging networks: metrics, figures, overlays, reports, evaluation on new data and comparison of runs, and
what an expert and a whole run leave as their results (the metrics, figures and summary.json of the run folder).

Judging reads and writes run folders through `neuro_trigger.run` and reads data (`neuro_trigger.data`);
nothing here trains.
"""
