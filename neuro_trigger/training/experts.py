"""Where `train` and `resume` used to live; kept so that existing notebooks and scripts
(`from neuro_trigger.training.experts import train`) go on working. New code imports them from
`neuro_trigger.runner.api`."""
from neuro_trigger import moved_names

API = "neuro_trigger.runner.api"
__getattr__ = moved_names(__name__, {"train": API, "resume": API, "RunResult": API, "DEBUG_ROOT": API})
