"""The Celery app the test's workers run (``celery -A orbit_pipelines_tests.celery.worker_app``).

dagster-celery's own ``dagster_celery.app`` with two worker settings a test can choose per
worker through the environment (dagster-celery reads worker settings only from a
``dagster_celery_config`` module or the command line):

- prefetch one task per pool process (dagster-celery's defaults module says 4), so a worker
  does not sit on tasks another worker could run;
- ``ORBIT_TEST_CELERY_ACKS_LATE=1``: acknowledge a task when it ends, not when it starts. A
  worker whose only pool process is frozen then holds no second task: with early
  acknowledgement (dagster-celery's default) it would take the recovery's task and keep it
  until the frozen process wakes.
"""

import os

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

app = make_app()
app.conf.worker_prefetch_multiplier = 1
app.conf.broker_url = os.environ.get("ORBIT_TEST_CELERY_BROKER", app.conf.broker_url)
if os.environ.get("ORBIT_TEST_CELERY_ACKS_LATE") == "1":
    app.conf.task_acks_late = True

execute_plan = create_task(app)
