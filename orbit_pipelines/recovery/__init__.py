"""Recovery: detect dead, hung and failed runs; decide, launch and report re-executions."""
