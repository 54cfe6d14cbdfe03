"""Running the machine's own tools (mount, mkfs, systemctl): a failure is one line with the
command and its reason, never a traceback."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from comfymulti.errors import NodeError

_TIMEOUT = 300.0


def run(args: Sequence[str], *, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run a command; NodeError naming it unless its exit code is in ok."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=_TIMEOUT,
                              check=False)
    except FileNotFoundError:
        raise NodeError(f"{args[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise NodeError(f"{' '.join(args)}: no answer after {_TIMEOUT:.0f} s") from None
    if done.returncode not in ok:
        reason = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise NodeError(f"{' '.join(args)} failed (exit {done.returncode}): {reason}")
    return done
