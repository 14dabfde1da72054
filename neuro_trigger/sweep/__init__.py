"""Sweeps: a space of config keys searched for the best network of each expert (docs/sweeps.md)."""
