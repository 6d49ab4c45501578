"""The CLI gives numpy's BLAS one thread, so it never competes with torch's threads."""

import os
import subprocess
import sys

PROBE = """
import os, sys
os.environ.pop("OPENBLAS_NUM_THREADS", None) if sys.argv[1] == "unset" else None
from longvid.cli import main
sys.argv = ["longvid", "--help"]
try:
    main()
except SystemExit:
    pass
print("numpy-loaded" if "numpy" in sys.modules else "numpy-not-loaded",
      os.environ.get("OPENBLAS_NUM_THREADS"))
"""


def probe(mode: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip().splitlines()[-1].split()


def test_cli_sets_one_blas_thread_before_numpy_loads():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    # set before numpy is imported, or OpenBLAS would already have started its pool
    assert probe("unset", env) == ["numpy-not-loaded", "1"]


def test_a_users_own_blas_threads_win():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="3")
    assert probe("keep", env) == ["numpy-not-loaded", "3"]
