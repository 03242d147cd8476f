"""What the executor is working on, how, and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from orbit_pipelines.errors import E2008_BAD_CONFIG, OrbitError

OnError = Literal["fail_fast", "quarantine"]


@dataclass(frozen=True)
class RunScope:
    """A step of a logical run.

    ``root_run_id`` (the Dagster run group's root) keys the ledger, so a re-execution finds
    what its ancestors finished; ``run_id`` is the run doing the work now (heartbeats).
    """

    root_run_id: str
    run_id: str
    step_key: str


@dataclass(frozen=True)
class ExecutorOptions:
    """How the executor commits and what it does with a failing row.

    ``on_error="fail_fast"`` stops at the first failing row and fails the step with its
    code; ``"quarantine"`` records the row as quarantined and goes on. Even in quarantine
    mode an error that does not concern only its row fails the step instead (see
    ``errors.concerns_only_its_row``): a retryable external error (a timeout), refused
    credentials, a configuration error — quarantining those would set aside every row.
    """

    batch_size: int = 1000
    on_error: OnError = "fail_fast"
    heartbeat_every_s: float = 2.0
    progress_every_pct: float = 5.0
    # When the row count is unknown (a generator), report progress every this many rows.
    progress_every_rows: int = 10_000
    # A batch with a transactional effect keeps its transaction open while its rows run;
    # a worker paused that long (SIGSTOP, VM freeze) has it ended by the server, so the row
    # locks it holds cannot block the recovery forever.
    idle_in_transaction_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        # Checked here, before the first side effect: a zero batch size once returned
        # success with the handler never called, a zero heartbeat wrote thousands a second.
        _require(
            _is_int(self.batch_size) and self.batch_size >= 1,
            "batch_size",
            "an int >= 1",
            self.batch_size,
        )
        _require(
            _is_number(self.heartbeat_every_s) and self.heartbeat_every_s > 0,
            "heartbeat_every_s",
            "a number > 0",
            self.heartbeat_every_s,
        )
        _require(
            self.on_error in get_args(OnError),
            "on_error",
            " or ".join(repr(v) for v in get_args(OnError)),
            self.on_error,
        )
        _require(
            _is_number(self.progress_every_pct) and self.progress_every_pct > 0,
            "progress_every_pct",
            "a number > 0",
            self.progress_every_pct,
        )
        _require(
            _is_int(self.progress_every_rows) and self.progress_every_rows >= 1,
            "progress_every_rows",
            "an int >= 1",
            self.progress_every_rows,
        )
        _require(
            _is_number(self.idle_in_transaction_timeout_s)
            and self.idle_in_transaction_timeout_s >= 1,
            "idle_in_transaction_timeout_s",
            "a number >= 1",
            self.idle_in_transaction_timeout_s,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and value == value and value != float("inf"))


def _require(ok: bool, name: str, wanted: str, got: Any) -> None:
    if not ok:
        raise OrbitError(E2008_BAD_CONFIG, f"ExecutorOptions.{name} must be {wanted}, not {got!r}")


@dataclass(frozen=True)
class ProgressEvent:
    """Where a step stands; sent to the ``progress`` callback every few percent and at the end."""

    rows_seen: int
    rows_total: int | None
    done: int
    skipped_already_done: int
    quarantined: int
    failed: int
    held: int
    final: bool = False

    def describe(self) -> str:
        """ "row 4,700/10,000 (47%), 3 quarantined" for a log line."""
        if self.rows_total:
            pct = 100.0 * self.rows_seen / self.rows_total
            text = f"row {self.rows_seen:,}/{self.rows_total:,} ({pct:.0f}%)"
        else:
            text = f"row {self.rows_seen:,}"
        extras = [
            f"{self.skipped_already_done:,} already done" if self.skipped_already_done else "",
            f"{self.quarantined:,} quarantined" if self.quarantined else "",
            f"{self.held:,} held (effect in doubt)" if self.held else "",
            f"{self.failed:,} failed" if self.failed else "",
        ]
        extra = ", ".join(e for e in extras if e)
        return f"{text}, {extra}" if extra else text


@dataclass
class RunSummary:
    """What one ``run`` did: the counts for a step's output metadata."""

    rows_total: int = 0
    done: int = 0
    skipped_already_done: int = 0
    quarantined: int = 0
    failed: int = 0
    held: int = 0
    duplicates: int = 0
    incomplete: int = 0
    batches_committed: int = 0
    elapsed_s: float = 0.0
    aggregations: dict[str, Any] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for output metadata."""
        return {
            "rows_total": self.rows_total,
            "rows_done": self.done,
            "rows_skipped_already_done": self.skipped_already_done,
            "rows_quarantined": self.quarantined,
            "rows_failed": self.failed,
            "rows_held": self.held,
            "rows_duplicate_keys": self.duplicates,
            "batches_committed": self.batches_committed,
            "elapsed_s": round(self.elapsed_s, 3),
        }
