"""Embedders: each turns a day's inputs into one vector per user, behind the interface in base.py."""
