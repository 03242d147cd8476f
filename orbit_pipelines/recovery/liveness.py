"""Is a process on this host still alive? (pid check for heartbeats written here.)"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def this_host() -> str:
    """The host name heartbeats record (``socket.gethostname()``)."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists here and is not a zombie.

    A SIGKILLed run worker stays a zombie until its parent (the code server) reaps it; a
    zombie does no work, so it counts as dead.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself contain spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z"
