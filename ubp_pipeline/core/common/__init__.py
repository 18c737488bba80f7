"""What every stage shares: atomic writes, the torch device, training progress, checkpoints and the SQL runner.

Nothing here knows about events, profiles or recommenders; every other folder of core/ may import from it.
"""
