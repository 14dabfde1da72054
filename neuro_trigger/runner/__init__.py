"""Running a whole run: `api` (train, resume), the launchers (`local`, `slurm`) and the console view."""
