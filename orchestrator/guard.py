"""Only the orchestrator's own entry points run in its workers.

Anyone who can write to Redis can push an RQ job. A worker that ran any
function a job names would run `os.system` for them; one that unpickled
job data would run code while loading it. So the workers read job data
with the JSON serializer only (a pickle payload cannot even be decoded),
and this job class refuses, before anything is imported or called, every
function that is not one of the orchestrator's entry points. A refused job
fails with the reason in RQ's failed registry and the log; the worker goes
on with the next job.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job

from orchestrator.dispatch import ENTRY_POINTS

log = logging.getLogger("orchestrator.guard")


class RefusedJob(Exception):
    """A job named a function the orchestrator does not run."""


class GuardedJob(Job):
    def _execute(self) -> Any:
        try:
            name = self.func_name
        except DeserializationError:
            name = None
        if name not in ENTRY_POINTS:
            shown = "undecodable data (not JSON)" if name is None else repr(name)[:200]
            log.error("refused job %s: %s is not an orchestrator entry point", self.id, shown)
            raise RefusedJob(f"refused: {shown} is not an orchestrator entry point")
        return super()._execute()
