"""The study runner: Table I/II rows of any detector family, statistics, severity curves, reports."""
