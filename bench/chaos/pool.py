"""The `orchestrator worker` processes, under the harness's control: start, kill, restart.

Each worker is a supervisor whose children are the applier, the task workers
(each forks a work-horse per job) and the notification workers. Roles are
read from RQ's own worker registry (pid and queues); a child RQ does not list
is the applier. Every kill goes to the fault log before anything else.

Kinds of kill:
  child       one child of one supervisor, with its work-horse if it has one
              (the supervisor restarts the child)
  horse       a work-horse alone (as the OOM killer would): its worker lives
  pickup      an idle task worker, with its horse, the instant it forks one: the job is
              dequeued and not yet marked started (RQ's most fragile moment)
  worker      one supervisor's whole tree; the harness restarts it after a pause
  everything  every tree at once; all restarted after a pause
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from rq import Worker

from bench.chaos import procs
from bench.chaos.journal import FaultLog

if TYPE_CHECKING:
    from bench.chaos.cluster import Shape

RESTART_AFTER = (0.5, 2.0)  # seconds a killed whole worker stays down


class WorkerPool:
    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        folder: Path,
        faults: FaultLog,
        client: redis.Redis,
        shape: Shape,
    ) -> None:
        self.command = [
            *command,
            *("--processes", str(shape.processes), "--notifiers", str(shape.notifiers)),
        ]
        self.env = env
        self.folder = folder
        self.faults = faults
        self.redis = client
        self.count = shape.workers
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.down_until: dict[int, float] = {}
        self.unexpected: list[str] = []  # exits nobody caused
        self._killed: set[int] = set()
        self._noted: set[int] = set()
        self._orphans: set[int] = set()  # killed pids that may be re-parented to us
        procs.become_subreaper()

    # -- lifecycle ---------------------------------------------------------------

    def start_all(self) -> None:
        for slot in range(self.count):
            self.start(slot)

    def start(self, slot: int) -> None:
        with (self.folder / f"worker-{slot}.log").open("ab") as log:
            process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.env["PYTHONPATH"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[slot] = process
        self.down_until.pop(slot, None)

    def ensure_running(self) -> None:
        """Restart every worker that is down and due; note exits the harness did not cause."""
        now = time.monotonic()
        for slot in range(self.count):
            process = self.procs.get(slot)
            if process is not None and process.poll() is None:
                continue
            if process is not None and process.pid not in self._killed | self._noted:
                self._noted.add(process.pid)
                self.unexpected.append(f"worker {slot} exited with {process.returncode}")
            if now < self.down_until.get(slot, 0.0):
                continue
            self.start(slot)
            self.faults.restart(slot, self.procs[slot].pid)
        self._orphans = procs.reap(self._orphans)

    def stop(self, grace: float = 30.0) -> None:
        for process in self.procs.values():
            if process.poll() is None:
                procs.terminate(process.pid)
        deadline = time.monotonic() + grace
        for process in self.procs.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                procs.kill_trees([process.pid])
                process.wait(10)
        self._orphans = procs.reap(self._orphans)

    def running(self) -> list[tuple[int, int]]:
        return [(s, p.pid) for s, p in sorted(self.procs.items()) if p.poll() is None]

    # -- who is who ------------------------------------------------------------------

    def roles(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for worker in Worker.all(connection=self.redis):
            queues = worker.queue_names()
            if worker.pid:
                found[int(worker.pid)] = "notifications" if "notifications" in queues else "tasks"
        return found

    def tree_roles(self, pid: int) -> list[str]:
        roles = self.roles()
        out = ["supervisor"]
        for child in procs.children(pid):
            out.append(roles.get(child, "applier"))
            if procs.children(child):
                out.append("horse")
        return out

    # -- kills -------------------------------------------------------------------------

    def kill_child(self, rng: random.Random, weights: dict[str, float]) -> bool:
        """One child of one supervisor (a task worker with its horse), chosen by role weight."""
        running = self.running()
        if not running:
            return False
        slot, pid = rng.choice(running)
        roles = self.roles()
        candidates = [(c, roles.get(c, "applier")) for c in procs.children(pid)]
        candidates = [(c, r) for c, r in candidates if weights.get(r, 0) > 0]
        if not candidates:
            return False
        child, role = rng.choices(candidates, [weights[r] for _, r in candidates])[0]
        horses = procs.children(child)
        self._log("child", [child, *horses], [role, *(["horse"] if horses else [])], slot)
        self._kill([child])
        return True

    def kill_horse(self, rng: random.Random) -> bool:
        """A work-horse alone; False when no task is running anywhere right now."""
        roles = self.roles()
        horses = [
            (slot, child, horse)
            for slot, pid in self.running()
            for child in procs.children(pid)
            if roles.get(child) == "tasks"
            for horse in procs.children(child)
        ]
        if not horses:
            return False
        slot, _, horse = rng.choice(horses)
        self._log("horse", [horse], ["horse"], slot)
        self._kill([horse])
        return True

    def kill_at_pickup(self, rng: random.Random, wait: float = 3.0) -> bool:
        """An idle task worker, killed with its horse the moment it forks one: the job has
        just been dequeued and the horse has not yet marked it started."""
        roles = self.roles()
        idle = [
            (slot, child)
            for slot, pid in self.running()
            for child in procs.children(pid)
            if roles.get(child) == "tasks" and not procs.children(child)
        ]
        if not idle:
            return False
        slot, worker = rng.choice(idle)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            horses = procs.children(worker)
            if horses:
                self._log("pickup", [worker, *horses], ["tasks", "horse"], slot)
                self._kill([worker])
                return True
            time.sleep(0.001)
        return False

    def kill_worker(self, rng: random.Random) -> bool:
        running = self.running()
        if not running:
            return False
        slot, pid = rng.choice(running)
        self._log("worker", [pid, *procs.descendants(pid)], self.tree_roles(pid), slot)
        self._kill([pid])
        self.down_until[slot] = time.monotonic() + rng.uniform(*RESTART_AFTER)
        return True

    def kill_everything(self, rng: random.Random) -> bool:
        running = self.running()
        if not running:
            return False
        pids = [p for _, p in running]
        roles = [r for p in pids for r in self.tree_roles(p)]
        every = [q for p in pids for q in (p, *procs.descendants(p))]
        self._log("everything", every, roles, None)
        self._kill(pids)
        down = time.monotonic() + rng.uniform(*RESTART_AFTER)
        for slot, _ in running:
            self.down_until[slot] = down
        return True

    def _log(self, action: str, pids: list[int], roles: list[str], slot: int | None) -> None:
        self.faults.kill(action, pids, roles, slot)

    def _kill(self, roots: list[int]) -> None:
        killed = procs.kill_trees(roots)
        self._killed.update(killed)
        popen = {p.pid for p in self.procs.values()}
        self._orphans.update(k for k in killed if k not in popen)

    def summary(self) -> dict[str, Any]:
        return {"unexpected_exits": list(self.unexpected)}
