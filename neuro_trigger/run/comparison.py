"""Where `compare` used to live, before judging moved to `neuro_trigger.judge`; kept so that existing notebooks
(`from neuro_trigger.run.comparison import compare`) go on working. New code imports it from
`neuro_trigger.judge.comparison`."""
from neuro_trigger import moved_names

__getattr__ = moved_names(__name__, {"compare": "neuro_trigger.judge.comparison",
                                     "format_table": "neuro_trigger.judge.comparison"})
