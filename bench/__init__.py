"""Benchmarks, run as scripts from the repository root (``python bench/engines.py``); not a test.

Each script puts the repository root on sys.path and imports its neighbours by
package name (``bench.harness``, ``bench.servers``), so a module loads once,
under one name. ``bench.servers`` holds the private servers the benchmarks and
the test suite both start; tests import it, it imports nothing from tests/.
"""
