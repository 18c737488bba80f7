"""Stage 4, evaluation. In: profiles and blocks of a day D, purchases of the 28 days after D. Out: the backtest table
(every row probed on the challenge's tasks, with its metrics), next to the aggregated-features baselines."""
