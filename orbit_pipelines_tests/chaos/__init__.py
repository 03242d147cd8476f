"""Chaos suite: kill parts of a real deployment at random moments, check the invariants.

``python -m orbit_pipelines_tests.chaos --rounds N`` (see ``runner.py``).
"""
