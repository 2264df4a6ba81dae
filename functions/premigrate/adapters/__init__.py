"""Adapters to the outside: where migrations come from and how the database is reached."""
