"""``python -m orbit_pipelines_tests.chaos``."""

import sys

from orbit_pipelines_tests.chaos.runner import main

sys.exit(main())
