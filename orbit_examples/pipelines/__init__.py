"""Example jobs built from the parts: shipments, sales rollup, orders import."""
