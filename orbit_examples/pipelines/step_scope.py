"""Demo fault injection for the example ops (the run scope is ``run_rows``' business).

No ``from __future__ import annotations``: ops in this package take ``OpExecutionContext``.
"""

import os
import signal

from dagster import DagsterRun, OpExecutionContext

__all__ = ["ATTEMPT_TAG", "KillSwitch", "is_first_attempt"]

ATTEMPT_TAG = "orbit/attempt"


def is_first_attempt(run: DagsterRun) -> bool:
    """True for the original run of a job, never for a re-execution or recovery run."""
    attempt = run.tags.get(ATTEMPT_TAG)
    return run.parent_run_id is None and attempt in (None, "1")


class KillSwitch:
    """Demo/test fault injection: SIGKILL this process after ``after_rows`` rows.

    Only on the first attempt, so the recovery run that follows gets through. Off when
    ``after_rows`` is None (the default of every job's config).
    """

    def __init__(self, context: OpExecutionContext, after_rows: int | None) -> None:
        armed = after_rows is not None and is_first_attempt(context.run)
        self._remaining = after_rows if armed else None
        if armed:
            context.log.warning(
                f"fault injection: this step's process will SIGKILL itself after {after_rows} rows"
            )

    def tick(self) -> None:
        """Count one row; kill the process when the budget is used up."""
        if self._remaining is None:
            return
        self._remaining -= 1
        if self._remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
