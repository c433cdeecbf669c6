"""`serve` raises its soft limit on open files to the hard one: every live stream holds a
socket, and the usual soft limit of 1,024 would refuse the streams beyond it."""

from __future__ import annotations

import resource
import subprocess
import sys

PROBE = (
    "import resource; from app.__main__ import raise_open_files_limit;"
    " raise_open_files_limit(); print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=_low_soft_limit,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    soft, hard = (int(value) for value in done.stdout.split())
    _, ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == ours
    assert soft == (hard if hard != resource.RLIM_INFINITY else 65_536)
    assert soft > 256
