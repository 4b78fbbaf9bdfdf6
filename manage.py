#!/usr/bin/env python
"""Django's command-line utility for Covet Backup."""
import gc
import os
import sys


def main() -> None:
    """Run a management command."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covet_site.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    finally:
        # The interpreter's teardown runs full garbage collections over every
        # object Django and the apps created (0.1 s, more on a busy machine);
        # frozen objects are skipped. Only the exit (atexit, teardown) follows.
        gc.freeze()


if __name__ == "__main__":
    main()
