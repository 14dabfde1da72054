"""Where `evaluate` used to live, before judging moved to `neuro_trigger.judge`; kept so that existing notebooks
(`from neuro_trigger.run.evaluation import evaluate`) go on working. New code imports it from
`neuro_trigger.judge.evaluation`."""
from neuro_trigger import moved_names

__getattr__ = moved_names(__name__, {"evaluate": "neuro_trigger.judge.evaluation"})
