"""``premigrate check``: replay the migration set on a scratch database and measure what each pending
statement really does there, then judge the measured facts.

Two halves that never mix:

- measurement talks to PostgreSQL through the ``Database`` port (``catalog``: what running code can see
  of the schema; ``measuring``: locks, rewrites and scans of each statement; ``target``: history and
  table sizes of the real database, read-only);
- judgement is pure (``changes``: catalog before/after -> changes; ``judging``: facts -> findings;
  ``rules``: the rule catalogue; ``report``: the readable and JSON output), so every rule is tested on
  facts alone.
"""
