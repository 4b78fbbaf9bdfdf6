"""The path of archive_command and restore_command before archiving/ existed: run archiving/covet_wal.py.

PostgreSQL servers set up by earlier versions of setup_pitr still run this
file once per segment; it stays standard-library only, like the entry point.
"""

import os.path
import runpy

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    runpy.run_path(os.path.join(here, "..", "..", "archiving", "covet_wal.py"), run_name="__main__")
