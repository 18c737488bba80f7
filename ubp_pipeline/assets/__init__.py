"""Thin Dagster wrappers, one module per stage; the work itself is in ubp_pipeline.core."""
