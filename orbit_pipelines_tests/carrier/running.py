"""Start a real carrier process on a free port (used by carrier and pipeline tests)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from orbit_examples.carrier.client import CarrierClient
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

TOKEN = "test-token-s3cret"


@dataclass
class RunningCarrier:
    """A started carrier: its URL, its process and where it logs."""

    url: str
    proc: object
    log: Path

    def client(self, *, token: str = TOKEN, timeout_s: float = 5.0) -> CarrierClient:
        return CarrierClient(self.url, token, timeout_s=timeout_s)


def start_carrier(
    children: ChildProcesses, db_url: str, scratch: Path, *extra: str
) -> RunningCarrier:
    """Start ``python -m orbit_examples.carrier`` and wait for its port file."""
    scratch.mkdir(parents=True, exist_ok=True)
    port_file = scratch / "carrier.port"
    log = scratch / "carrier.log"
    env = {**os.environ, "ORBIT_CARRIER_TOKEN": TOKEN}
    proc = children.start(
        [
            sys.executable,
            "-m",
            "orbit_examples.carrier",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--postgres-url",
            db_url,
            *extra,
        ],
        env=env,
        log_path=log,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"carrier exited {proc.returncode}: {log.read_text()}")
        return port_file.exists()

    wait_for(ready, timeout_s=30, what="the carrier's port file")
    port = int(port_file.read_text())
    return RunningCarrier(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
