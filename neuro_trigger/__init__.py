"""NeuroTrigger expert trainer: the Belle II level-1 neural z-vertex trigger, one network per expert."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
