"""Stage 2, sequences. In: the warehouse as of a day. Out: one chronological, typed event sequence per user (the
schema is declared once, in schema.py), the day's vocabularies, and the SQL statistics per user."""
