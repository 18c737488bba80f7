"""Stage 1, ingest. In: a source directory in the challenge layout. Out: the DuckDB warehouse (catalogue, accepted
raw events per day, quarantine with reasons), with every source row accounted for."""
