"""Input formats: the synthetic generator and loaders for the challenge layout and public sets."""
