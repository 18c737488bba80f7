"""Multi-process training launched with torchrun, reporting back to Dagster through dagster-pipes."""
