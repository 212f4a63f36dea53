"""RQ's SimpleWorker without its pub/sub thread, for the bench's own RQ workers.

RQ (3.0, with redis-py 8) starts a thread listening for remote commands (`rq`'s
shutdown, kill-horse, stop-job) and, at teardown, joins it without a bound while it sits
in a read of up to 60 s: a burst worker's `work()` then returns up to a minute after its
last job, and a worker stopped by a signal lingers as long. The bench sends no remote
commands, so the thread does nothing but cost that minute: in the RQ baseline's timed
window (which a slow teardown would make RQ look 60 s slower than it is), and in the
wall time of every workload. The engine's own workers do the same
(orchestrator.entry.worker.NoRemoteCommands).
"""

from __future__ import annotations

from rq import SimpleWorker


class QuietSimpleWorker(SimpleWorker):
    def subscribe(self) -> None:
        pass
