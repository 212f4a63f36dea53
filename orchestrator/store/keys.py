"""Every Redis key the engine writes, built here and nowhere else.

With namespace N (default "orch") and P partitions; {pK} is a hash tag, so
everything that one partition's applier commits in one MULTI stays in one slot:

  N:meta                          hash   partitions: the P this deployment was created with;
                                         retention: seconds, as the appliers keep instances
  N:{pK}:inbox                    stream events addressed to instances of partition K
  N:{pK}:lease                    string id of the applier that owns partition K (PX ttl)
  N:{pK}:timers                   zset   armed timers (member: timer id, score: due time)
  N:{pK}:timer-events             hash   timer id -> the event JSON it becomes when due
  N:{pK}:outstanding              zset   RQ job ids of tasks awaiting an answer, by next check time
  N:{pK}:outstanding-jobs         hash   job id -> what the task answers (instance, try, entry)
  N:{pK}:alive:JOB                string heartbeat of a running task, expires when it stops
  N:stranded:JOB                  string when a job was first seen dequeued but never started
  N:{pK}:published                stream events published by instances of partition K
                                         (CloudEvents JSON; store.published), trimmed
                                         by length and by age
  N:subscriptions                 hash   webhook subscription id -> its spec (JSON)
  N:subscription-dead:SID         stream events a subscription could not deliver
  N:{pK}:instance:ID              hash   one instance (see orchestrator.core.instance)
  N:{pK}:history:ID               stream every event applied to ID, with what it did
  N:{pK}:archive:ID               string history of a finished ID, compressed (store.archive)
  N:{pK}:applied:ID               set    event ids already applied to ID (idempotency)
  N:corr:WORKFLOW:KEY=VALUE       string id of the live instance answering to a business key
  N:waiting:WORKFLOW:KEY=VALUE    list   events held for an instance not yet started
                                         (missing_instance="wait"; store.waiting)
  N:waiting                       zset   those lists by when their oldest event's wait ends
  N:idx:all                       zset   instance ids by creation time
  N:idx:workflow:NAME             zset   instance ids of one workflow by creation time
  N:idx:status:STATUS             set    instance ids by status
  N:idx:state:NAME:STATE          set    instance ids of a workflow by current state
  N:idx:expiring                  zset   finished instances (JSON id, workflow, state) by expiry
  N:expired                       zset   ids of instances removed by retention, by removal time
                                         (each kept for as long as the retention)
  N:notification:KEY              hash   one notification's ledger record (notify.ledger)
  N:notifications:ID              zset   the notification keys of instance ID, by creation
  N:provider-message:PID          string notification key of a provider's message id
  N:notify-later                  zset   notification jobs to enqueue when due (retries, quiet)
  N:rate:CHANNEL                  string next free send slot of a channel (rate limit)
  N:recipient:RID                 hash   a recipient: addresses, subscriptions, preferences
  N:recipients                    set    recipient ids
  N:deadletters                   stream events that could not be applied, with the reason
  N:schedules                     hash   schedule name -> its spec (JSON, core.schedule)
  N:schedule:NAME                 hash   where a schedule stands: last, paused, instance,
                                         started, skipped (store.schedules)
  N:schedules:due                 zset   schedule names by when their next round is due
  N:appliers                      zset   live applier ids by last heartbeat
  N:applier-workflows             hash   applier id -> the workflows it serves (runtime.roster)
  N:metrics                       zset   processes writing metrics (HOST:PID, HOST:PID:jobs)
                                         by last write; expires a day after it (store.metrics)
  N:metrics:PROCESS               hash   one process's metric samples -> values (store.metrics),
                                         expiring a day after its last write
  N:tokens                        hash   API token id -> its record (JSON: name, scope, SHA-256
                                         of the token, created, last_used; store.tokens)

Retention (orchestrator.store.retention): everything written for one instance expires
with it: instance, archive, applied, and its notifications (index, records, and
their provider-message keys); a notification with no instance (`notify send`)
lives for the retention. What stays is deployment-wide: meta, inboxes, leases,
timers, outstanding, the idx:* and expired sets (trimmed by the janitor),
notify-later, rate, recipients, deadletters, schedules, waiting, appliers, the published
streams (trimmed by length and age), subscriptions and tokens.

RQ keeps its own keys (rq:*); give each deployment its own Redis database.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

INBOX_GROUP = "appliers"
INBOX_CONSUMER = "owner"  # one name: only the lease holder reads a partition


@dataclass(frozen=True)
class Keys:
    namespace: str = "orch"
    partitions: int = 8

    def partition_of(self, instance_id: str) -> int:
        return zlib.crc32(instance_id.encode()) % self.partitions

    def _p(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    def _i(self, instance_id: str) -> str:
        return self._p(self.partition_of(instance_id))

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    def inbox(self, partition: int) -> str:
        return f"{self._p(partition)}:inbox"

    def lease(self, partition: int) -> str:
        return f"{self._p(partition)}:lease"

    def timers(self, partition: int) -> str:
        return f"{self._p(partition)}:timers"

    def timer_events(self, partition: int) -> str:
        return f"{self._p(partition)}:timer-events"

    def outstanding(self, partition: int) -> str:
        return f"{self._p(partition)}:outstanding"

    def outstanding_jobs(self, partition: int) -> str:
        return f"{self._p(partition)}:outstanding-jobs"

    def stranded(self, job: str) -> str:
        return f"{self.namespace}:stranded:{job}"

    def alive(self, partition: int, job: str) -> str:
        return f"{self._p(partition)}:alive:{job}"

    def published(self, partition: int) -> str:
        return f"{self._p(partition)}:published"

    def all_published(self) -> list[str]:
        return [self.published(p) for p in range(self.partitions)]

    @property
    def subscriptions(self) -> str:
        return f"{self.namespace}:subscriptions"

    def subscription_dead(self, subscription: str) -> str:
        return f"{self.namespace}:subscription-dead:{subscription}"

    def instance(self, instance_id: str) -> str:
        return f"{self._i(instance_id)}:instance:{instance_id}"

    def history(self, instance_id: str) -> str:
        return f"{self._i(instance_id)}:history:{instance_id}"

    def archive(self, instance_id: str) -> str:
        return f"{self._i(instance_id)}:archive:{instance_id}"

    def applied(self, instance_id: str) -> str:
        return f"{self._i(instance_id)}:applied:{instance_id}"

    def correlation(self, workflow: str, key: str, value: str) -> str:
        return f"{self.namespace}:corr:{workflow}:{key}={value}"

    def waiting(self, workflow: str, key: str, value: str) -> str:
        return f"{self.namespace}:waiting:{workflow}:{key}={value}"

    @property
    def waiting_due(self) -> str:
        return f"{self.namespace}:waiting"

    @property
    def all_instances(self) -> str:
        return f"{self.namespace}:idx:all"

    def by_workflow(self, workflow: str) -> str:
        return f"{self.namespace}:idx:workflow:{workflow}"

    def by_status(self, status: str) -> str:
        return f"{self.namespace}:idx:status:{status}"

    def by_state(self, workflow: str, state: str) -> str:
        return f"{self.namespace}:idx:state:{workflow}:{state}"

    @property
    def expiring(self) -> str:
        return f"{self.namespace}:idx:expiring"

    @property
    def expired(self) -> str:
        return f"{self.namespace}:expired"

    def notification(self, key: str) -> str:
        return f"{self.namespace}:notification:{key}"

    def notifications_of(self, instance_id: str) -> str:
        return f"{self.namespace}:notifications:{instance_id}"

    def provider_message(self, provider_id: str) -> str:
        return f"{self.namespace}:provider-message:{provider_id}"

    @property
    def notify_later(self) -> str:
        return f"{self.namespace}:notify-later"

    def rate(self, channel: str) -> str:
        return f"{self.namespace}:rate:{channel}"

    def recipient(self, recipient_id: str) -> str:
        return f"{self.namespace}:recipient:{recipient_id}"

    @property
    def recipients(self) -> str:
        return f"{self.namespace}:recipients"

    @property
    def deadletters(self) -> str:
        return f"{self.namespace}:deadletters"

    @property
    def schedules(self) -> str:
        return f"{self.namespace}:schedules"

    def schedule(self, name: str) -> str:
        return f"{self.namespace}:schedule:{name}"

    @property
    def schedules_due(self) -> str:
        return f"{self.namespace}:schedules:due"

    @property
    def appliers(self) -> str:
        return f"{self.namespace}:appliers"

    @property
    def applier_workflows(self) -> str:
        return f"{self.namespace}:applier-workflows"

    @property
    def metrics(self) -> str:
        return f"{self.namespace}:metrics"

    def metrics_of(self, process: str) -> str:
        return f"{self.namespace}:metrics:{process}"

    @property
    def tokens(self) -> str:
        return f"{self.namespace}:tokens"
