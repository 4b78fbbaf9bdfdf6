"""Covet's test suite, a package so every helper has one import name: ``tests.<module>``.

Fixtures live in conftest.py and the plugin modules it names in
``pytest_plugins``; plain helpers (``tests.helpers``, ``tests.pg_fixtures``,
...) are imported by their package name, never by a bare module name.
"""
