"""Stage 3, profiles. In: sequence and statistics partitions. Out: one trained model and one embedding per block
(registry.py lists them, embedders/ holds the code), and the ensembled profile of a day in the challenge layout."""
