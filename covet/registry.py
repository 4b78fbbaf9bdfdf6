"""Registries of what Covet can talk to (database engines, storage kinds), each class loaded on first use.

An entry names its class by dotted path, so a module and the client
library it needs (psycopg, PyMySQL, boto3, the Azure SDK) are imported only
when something uses them, while the names and labels are there for choice
lists from the start.
"""

from importlib import import_module
from typing import NamedTuple


class Registered(NamedTuple):
    """One registry entry: the label people see and the dotted path of the class that implements it."""

    label: str
    path: str

    def load(self) -> type:
        """Import the implementing module and return the class."""
        module_name, class_name = self.path.rsplit(".", 1)
        return getattr(import_module(module_name), class_name)


def choices(registry: dict[str, Registered]) -> list[tuple[str, str]]:
    """Return ``registry`` as (name, label) pairs, in its order, for model, form and serializer choices."""
    return [(name, entry.label) for name, entry in registry.items()]
