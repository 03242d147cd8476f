"""``python -m orbit_examples.carrier``: run the local carrier until SIGTERM/SIGINT.

The token comes from ``--token`` or, better (it stays out of ``ps``), ``ORBIT_CARRIER_TOKEN``;
Postgres from ``--postgres-url`` or ``ORBIT_POSTGRES_URL``. With ``--port 0`` the OS picks a
free port; it is printed and, with ``--port-file``, written there atomically so a parent
process can wait for the file to appear.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from orbit_examples.carrier import storage
from orbit_examples.carrier.server import DEFAULT_TIMEOUT_DELAY_S, CarrierServer
from orbit_pipelines import OrbitError, OrbitStore

TOKEN_ENV = "ORBIT_CARRIER_TOKEN"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orbit_examples.carrier", description="Run the local carrier service."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: let the OS pick a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    parser.add_argument("--postgres-url", default=os.environ.get("ORBIT_POSTGRES_URL"))
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV))
    parser.add_argument(
        "--timeout-delay-s",
        type=float,
        default=DEFAULT_TIMEOUT_DELAY_S,
        help="how late a 'timeout' fault answers when the fault names no delay",
    )
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error("--postgres-url (or ORBIT_POSTGRES_URL) is required")
    if not args.token:
        parser.error(f"--token (or {TOKEN_ENV}) is required")
    return args


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    # rename is atomic: a reader never sees a half-written port.
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the carrier; return an exit code when it stops."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s carrier %(message)s")
    # The store resource outside a run: a small pool, connected (transient errors retried,
    # a refused or missing database an OrbitError) and migrated on first use.
    store = OrbitStore(postgres_url=args.postgres_url)
    try:
        engine = store.engine
        storage.create_tables(engine)
    except OrbitError as error:
        print(error.render(), file=sys.stderr)
        return 1
    server = CarrierServer(
        (args.host, args.port),
        engine=engine,
        token=args.token,
        timeout_delay_s=args.timeout_delay_s,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://{args.host}:{server.port}"
    print(f"carrier listening on {url} (store {store.describe()})", flush=True)
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
