"""Universal Behavioral Profiles and an interpretable sequential recommender, orchestrated by Dagster."""
