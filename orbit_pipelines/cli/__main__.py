from orbit_pipelines.cli import run

run()
