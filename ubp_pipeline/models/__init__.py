"""Torch modules only, one per file."""
