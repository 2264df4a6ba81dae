"""Premigrate: PostgreSQL schema migrations, exactly once, before an Auto Scaling Group rolls out."""

__version__ = "0.1.0"
