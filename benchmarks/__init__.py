"""The benchmark of issue 4: run.py is the entry point, one module per group of rows."""
