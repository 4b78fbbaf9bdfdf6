"""Run one command; print its wall time, CPU time and the peak RSS of its largest process as JSON.

    python bench/measure.py STDOUT_FILE -- COMMAND [ARG ...]

The command's stdout goes to STDOUT_FILE, its stderr passes through. The
figures come from this wrapper's own view of its children: wall time around
the command only (not this interpreter's start-up), and
getrusage(RUSAGE_CHILDREN), whose ru_maxrss is the largest resident set of
any single waited-for descendant (a pipeline's stages, a tool a command
starts) and whose CPU times add them all up. Servers the command talks to
are not its descendants and are not counted.
"""

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    with open(sys.argv[1], "wb") as out:
        started = time.perf_counter()
        returncode = subprocess.run(sys.argv[3:], stdout=out, check=False).returncode
        wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"returncode": returncode, "wall": wall, "peak_rss": usage.ru_maxrss * 1024,
                      "cpu": usage.ru_utime + usage.ru_stime}))


if __name__ == "__main__":
    main()
