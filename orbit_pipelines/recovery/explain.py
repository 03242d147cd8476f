"""A failure as a person reads it: an ``E-nnnn`` code and one sentence, never a class path
or a traceback.

Dagster reports a step whose process was killed as
``dagster._core.executor.child_process_executor.ChildProcessCrashException`` (the signal is
only in an engine event), and a killed run worker as "terminated by signal 9 (SIGKILL).
This usually indicates ... out of memory". Both become E-4011 with the signal named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orbit_pipelines.errors import E4001_STEP_FAILED, E4011_WORKER_KILLED, lookup

_SIGNAL = re.compile(r"terminated by signal (\d+)(?: \((SIG[A-Z0-9]+)\))?")
_EXIT = re.compile(r"exited with code (-?\d+)")
_CRASH_CLASS = "ChildProcessCrashException"
_CLASS_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Z][A-Za-z0-9]*(?:Error|Exception))\b")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \"", re.MULTILINE)
_SIGNAL_NAMES = {9: "SIGKILL", 15: "SIGTERM", 6: "SIGABRT", 11: "SIGSEGV", 2: "SIGINT"}


@dataclass(frozen=True)
class Explained:
    """A failure's code and sentence."""

    code: str | None
    sentence: str

    def line(self) -> str:
        """``E-4011: worker process killed by signal 9 (SIGKILL)``."""
        return f"{self.code}: {self.sentence}" if self.code else self.sentence


def first_line(text: str | None, limit: int = 200) -> str:
    """The first meaningful line of ``text``: no traceback, no class path, at most ``limit``."""
    if not text:
        return ""
    head = _TRACEBACK.split(text, maxsplit=1)[0]
    line = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    line = _CLASS_PATH.sub(r"\1", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def signal_of(text: str) -> tuple[int, str] | None:
    """(number, name) of the signal a crash text reports, if any."""
    match = _SIGNAL.search(text)
    if match:
        number = int(match.group(1))
        return number, match.group(2) or _SIGNAL_NAMES.get(number, f"signal {number}")
    match = _EXIT.search(text)
    if match and int(match.group(1)) < 0:
        number = -int(match.group(1))
        return number, _SIGNAL_NAMES.get(number, f"signal {number}")
    return None


def explain(
    code: str | None, message: str | None, *, crash_text: str = "", step_key: str | None = None
) -> Explained:
    """The code and sentence for a failure recorded as ``code`` / ``message``.

    ``crash_text`` is what Dagster said about a crashed process (its engine events), where
    the signal number lives.
    """
    text = message or ""
    killed = _CRASH_CLASS in text or signal_of(text) is not None
    if killed and (code is None or code == E4001_STEP_FAILED.code):
        sig = signal_of(text) or signal_of(crash_text)
        what = f"the worker process of step {step_key}" if step_key else "the worker process"
        if sig is None:
            return Explained(E4011_WORKER_KILLED.code, f"{what} was killed (exit without a result)")
        number, name = sig
        hint = " (often the out-of-memory killer or a person)" if number == 9 else ""
        return Explained(
            E4011_WORKER_KILLED.code, f"{what} was killed by signal {number} ({name}){hint}"
        )
    sentence = first_line(text)
    if code is not None:
        # Drop a leading "step X failed: E-3001 " so the code is not said twice.
        sentence = re.sub(rf"^(step \S+ failed: )?{re.escape(code)}:?\s*", "", sentence)
        if not sentence:
            known = lookup(code)
            sentence = known.title if known else "failed"
    return Explained(code, sentence or "failed with no recorded cause")
