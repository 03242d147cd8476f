"""The examples' own error codes: the orders CSV rules and the carrier's address check.

Registered here, by the examples, with the public ``register_error_code`` — the way your own
pipelines register theirs. The numbers are kept from when they were product codes, so ledgers
and tests that name them still read the same.
"""

from __future__ import annotations

from orbit_pipelines import register_error_code

# E-1xxx input: the orders CSV (see pipelines/orders_input.py). E-1003 (a value of the wrong
# type or range) is orbit's own and is imported from orbit_pipelines.errors where used.
E1001_MALFORMED_ROW = register_error_code("E-1001", "malformed input row", retryable=False)
E1002_MISSING_COLUMN = register_error_code(
    "E-1002", "input is missing a required column", retryable=False
)
E1004_DUPLICATE_KEY = register_error_code("E-1004", "duplicate row key in input", retryable=False)
E1005_EMPTY_INPUT = register_error_code("E-1005", "input is empty", retryable=False)
E1006_ENCODING = register_error_code("E-1006", "input is not valid UTF-8", retryable=False)
E1007_FIELD_TOO_LARGE = register_error_code(
    "E-1007", "input field exceeds the size limit", retryable=False
)

# E-3xxx external: the carrier refuses a delivery address; a retry cannot fix it.
E3003_ADDRESS_REJECTED = register_error_code(
    "E-3003", "external service rejected the address", retryable=False
)
