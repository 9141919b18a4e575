"""`mriad compare` and `mriad report`: paper-style tables, paired tests, figures and run reports.

Public entry points live in :mod:`mriad.compare.run` (``compare``, ``report``); the statistics in
:mod:`mriad.compare.statistics` are usable on their own.
"""
