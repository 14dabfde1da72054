"""Keep Lightning's banners, tips and routine warnings out of the console and the expert logs.

Lightning announces on every Trainer what hardware it found ("GPU available: ...", "TPU available",
"HPU available"), advertises cloud services ("💡 Tip: ... litmodels / litlogger"), hints at `srun`
on machines with SLURM, warns that `log_every_n_steps` exceeds the batches of an epoch (this
project logs per epoch on purpose), and says "`Trainer.fit` stopped: `max_epochs=...` reached.".
With five experts that is dozens of lines of noise per run. `quiet_lightning(False)` drops them with
standard logging levels and warnings filters; `quiet_lightning(True)` (``--verbose``) lets them through.
Lightning's own warnings and errors (logged at WARNING or above) are always kept.
"""
from __future__ import annotations

import logging
import warnings

# The loggers Lightning's messages come from (their children inherit the level): the unified
# package and the standalone ones, whichever is installed.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

# Warnings (rank_zero_warn, i.e. warnings.warn) that are expected in this project's use of Lightning;
# each is a regular expression matched at the start of the message.
ROUTINE_WARNINGS = (
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # we log per epoch
    r"The `srun` command is available on your system but is not used",  # SLURM login nodes
    r"GPU available but not used",
    r"Checkpoint directory .* exists and is not empty",  # --resume continues in the same folder
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's use of a torch API, not ours
)


def quiet_lightning(verbose: bool = False) -> None:
    """Silence (``verbose`` False) or restore (``verbose`` True) Lightning's informational output.

    Call it in every process that builds a Trainer, before building it (Lightning sets its loggers
    to INFO when it is first imported, so it is imported here first). Quiet: Lightning's loggers
    drop records below WARNING, and the routine warnings in ``ROUTINE_WARNINGS`` are ignored.
    Verbose: the loggers are set back to INFO (Lightning's default); no filter is added.
    """
    import lightning  # noqa: F401 - its import sets the loggers' levels, which must come first

    level = logging.INFO if verbose else logging.WARNING
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if verbose:
        return
    for pattern in ROUTINE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
