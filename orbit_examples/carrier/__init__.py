"""The local carrier HTTP service (server, storage) and the client the pipelines use.

Run it with ``python -m orbit_examples.carrier --port 0 --port-file PATH``; see ``server``
for the API and ``client`` for how responses map to error codes.
"""
