"""Examples built on orbit_pipelines' public API, as your own pipelines would be.

- ``pipelines``: the example jobs (``shipments``, ``sales_rollup``, ``orders_import``,
  ``store_health``) and their tables;
- ``carrier``: a local parcel-carrier HTTP service, its client and Dagster resource;
- ``demo``: what ``orbit demo`` runs;
- ``definitions``: the code location ``workspace.yaml`` loads;
- ``errors``: the examples' own error codes, registered with ``register_error_code``.

The product package (``orbit_pipelines``) never imports this one.
"""

# Registers the example error codes before any example module can raise or look one up.
from orbit_examples import errors as errors
