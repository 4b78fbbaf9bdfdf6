"""Covet's Django-free foundation: errors, stream helpers, the pipeline, database engines and storages.

Nothing under this package imports Django, so a worker, a command, the WAL
shipper and the benchmarks can all call it, and it can be tested alone.
"""
