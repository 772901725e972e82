"""Kill a child process at the point it names, never after a guessed sleep.

The child gets the write end of a pipe (its file descriptor number is passed in its command
line), writes one line there when it has reached the point the test wants it killed at, and
then blocks (e.g. on ``sys.stdin.read()``); the parent waits for that line, sends SIGKILL,
and gets the line back.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any


def kill_at_signal(command: Callable[[int], Sequence[str]], *, timeout: float = 300,
                   **popen: Any) -> bytes:
    """Run ``command(write_fd)``; when the child writes its line, SIGKILL it; return the line.

    Fails the test if the child says nothing within ``timeout`` seconds or is not killed by
    the signal (it ended by itself first).
    """
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(list(command(write_end)), pass_fds=(write_end,),
                            stdin=subprocess.PIPE, **popen)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        assert ready, "the child never reported the point it reached"
        message = os.read(read_end, 64)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        os.close(read_end)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    return message
