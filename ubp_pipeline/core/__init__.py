"""Plain-Python building blocks: no Dagster import anywhere below this package."""
