"""What `python -m bench` prints: the machine, the one table, and the details."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bench.measure import Measurement
from bench.targets import PUBLISHING_SYSTEM, SYSTEMS, Line, met_text, show


def machine(redis_version: str, ping_usec: float) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": redis_version,
        "ping_round_trip_usec": round(ping_usec, 1),
        "redis_py": _version("redis"),
        "hiredis": _hiredis(),
        "rq": _version("rq"),
    }


def print_machine(info: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.2f}" for x in info["load_average"])
    print(
        f"machine: nproc {info['nproc']} ({info['cpu']}), load average {load}; "
        f"Python {info['python']}; redis-server {info['redis_server']}; "
        f"redis-py {info['redis_py']} (hiredis: {info['hiredis']}); rq {info['rq']}"
    )
    print(
        f"         {info['platform']}; one PING round trip to the benchmark's "
        f"redis-server (loopback TCP): {info['ping_round_trip_usec']:.0f} us (median)"
    )


# label, getter, format, whether a ratio means anything (the item counts differ)
ROWS: list[tuple[str, Callable[[Measurement], float], str, bool]] = [
    ("items (events | jobs)", lambda m: m.items, "{:.0f}", False),
    ("wall time, s", lambda m: m.seconds, "{:.3f}", False),
    ("items per second", lambda m: m.per_second, "{:,.0f}", True),
    ("wall time per item, us", lambda m: m.usec_per_item, "{:.1f}", True),
    ("Redis round trips per item", lambda m: m.round_trips_per_item, "{:.4f}", True),
    ("Redis commands per item", lambda m: m.commands_per_item, "{:.3f}", True),
    ("Redis server CPU per item, us", lambda m: m.server_usec_per_item, "{:.2f}", True),
]


def print_table(orch: Measurement, rq: Measurement) -> None:
    lines: list[tuple[str, ...]] = [("metric", "orchestrator", "RQ baseline", "orch / RQ")]
    for label, get, fmt, comparable in ROWS:
        a, b = get(orch), get(rq)
        lines.append((label, _fmt(fmt, a), _fmt(fmt, b), _ratio(a, b) if comparable else ""))
    _print_rows(lines)


def print_commands(orch: Measurement, rq: Measurement) -> None:
    """Commands per item by name, the most frequent first."""
    names = sorted(
        set(orch.stats.calls) | set(rq.stats.calls),
        key=lambda n: -(orch.per(orch.stats.calls.get(n, 0)) + rq.per(rq.stats.calls.get(n, 0))),
    )
    lines: list[tuple[str, ...]] = [("command, per item", "orchestrator", "RQ baseline")]
    for name in names:
        a, b = orch.stats.calls.get(name, 0), rq.stats.calls.get(name, 0)
        lines.append(
            (
                name,
                _fmt("{:.4f}", orch.per(a)) if a else "-",
                _fmt("{:.4f}", rq.per(b)) if b else "-",
            )
        )
    _print_rows(lines)


def print_phases(orch: Measurement, descriptions: dict[str, str]) -> None:
    """Where the applier's wall time per event goes."""
    phases: dict[str, float] = orch.extra.get("phase_usec_per_event", {})
    total = sum(phases.values())
    lines: list[tuple[str, ...]] = [("applier phase", "us per event", "share", "what")]
    for name, usec in phases.items():
        share = f"{100 * usec / total:.0f}%" if total else "n/a"
        lines.append((name, f"{usec:.2f}", share, descriptions.get(name, "")))
    lines.append(("all", f"{total:.2f}", "100%", "sum over the drain's batches"))
    _print_rows(lines, align="<>><")


def ratios(orch: Measurement, rq: Measurement) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in (
        "per_second",
        "usec_per_item",
        "round_trips_per_item",
        "commands_per_item",
        "server_usec_per_item",
    ):
        a, b = float(getattr(orch, key)), float(getattr(rq, key))
        out[key] = round(a / b, 4) if b and math.isfinite(a) and math.isfinite(b) else None
    return out


def print_summary(lines: list[Line]) -> None:
    """The one table: every workload, each system's figure, the target, met or not."""
    others = [s for line in lines for s in line.values if s not in SYSTEMS]
    systems = [*SYSTEMS, *dict.fromkeys(others)]  # a system of no known column gets its own
    rows: list[tuple[str, ...]] = [("workload", *systems, "target", "met")]
    for line in lines:
        cells = [
            show(line.values[s], line.units.get(s, "")) if s in line.values else "" for s in systems
        ]
        rows.append((line.workload, *cells, line.target, met_text(line)))
    _print_rows(rows, align="<" + ">" * len(systems) + "<<")


def print_notes(lines: list[Line]) -> None:
    """Each line's notes under its label; a note the line above had already is left out."""
    seen: set[tuple[str, str]] = set()
    for line in lines:
        notes = [("target", line.why)] if line.why else []
        notes += [(s, n) for s, n in line.notes.items() if (s, n) not in seen]
        seen |= set(line.notes.items())
        if notes:
            print(f"  {line.workload}")
            for system, note in notes:
                print(f"      {system}: {note}")


def print_memory(details: dict[str, Any]) -> None:
    by_key = details["memory_usage_by_key_mean"]
    raw = details["raw_bytes_per_history_entry"]
    lines: list[tuple[str, ...]] = [("finished three_steps instance", "bytes")]
    lines += [
        (
            "all of it (used_memory delta per instance)",
            f"{details['bytes_per_instance_total']:,.0f}",
        ),
        ("  without its history", f"{details['bytes_per_instance_without_history']:,.0f}"),
        (
            "  its history (drop when deleted)",
            f"{details['history_bytes_per_instance']:,.0f}",
        ),
        (
            f"  per history entry ({details['history_entries_per_instance']:g})",
            f"{details['history_bytes_per_entry']:,.0f}",
        ),
        ("MEMORY USAGE: instance hash", f"{by_key['instance hash']:,.0f}"),
        ("MEMORY USAGE: history archive", f"{by_key['history archive']:,.0f}"),
        ("MEMORY USAGE: applied-ids set", f"{by_key['applied-ids set']:,.0f}"),
        ("raw field bytes: instance hash", f"{details['instance_hash_fields_bytes']:,}"),
        ("raw field bytes: history entry (mean)", f"{raw['mean']:,.0f}"),
        ("archive bytes (compressed entries)", f"{raw['archive_bytes']:,}"),
    ]
    _print_rows(lines, align="<>")
    fields = ", ".join(f"{k} {v:.0f}" for k, v in raw["mean_value_bytes_by_field"].items())
    print(f"history entry value bytes by field (mean): {fields}")


SCALE_COLUMNS = (
    ("size", "stored", "{:,}"),
    ("preload_seconds", "preload s", "{:.1f}"),
    ("preload_per_second", "copies/s", "{:,}"),
    ("batched_usec_per_event", "us/event batched", "{:,.0f}"),
    ("batched_cpu_usec_per_event", "CPU us/event", "{:,.0f}"),
    ("batched_server_cpu_usec_per_event", "of it server", "{:,.0f}"),
    ("single_event_usec_median", "us one event (median)", "{:,.0f}"),
    ("single_event_usec_p90", "p90", "{:,.0f}"),
    ("single_event_server_usec", "server us/tick", "{:,.0f}"),
    ("start_usec", "us/start", "{:,.0f}"),
    ("list_50_msec", "ms list(50)", "{:,.1f}"),
    ("used_memory_after", "used_memory MB", "{:,.0f}"),
)


def print_scale(details: dict[str, Any]) -> None:
    lines: list[tuple[str, ...]] = [tuple(title for _, title, _ in SCALE_COLUMNS)]
    for point in details["points"]:
        cells = []
        for name, _, fmt in SCALE_COLUMNS:
            value = point.get(name)
            if name == "used_memory_after" and value is not None:
                value = value / 1e6
            cells.append("-" if value is None else fmt.format(value))
        lines.append(tuple(cells))
    _print_rows(lines, align=">" * len(SCALE_COLUMNS))
    for reason in details.get("skipped", []):
        print(f"not run at {reason}")


def print_startup(details: dict[str, Any]) -> None:
    imports = details["import_cli_main"]
    print(f"python -X importtime -c 'import cli.main': {imports['total_ms']:.0f} ms in all")
    for title, key in (("packages", "packages_ms"), ("own modules", "own_modules_ms")):
        heaviest = ", ".join(f"{name} {ms:.0f}" for name, ms in imports[key].items())
        print(f"  {title}, cumulative ms: {heaviest}")


def print_flow_trips(details: dict[str, Any]) -> None:
    """Workload 2's Redis round trips and commands per workflow step, by system and name;
    then issue #17's publishing figures, when its variant ran."""
    from bench.flows.trips import commands_table

    print(commands_table(details) or "(no round trips counted)")
    systems = details.get("systems", {})
    if PUBLISHING_SYSTEM in systems:
        print()
        print_publishing(systems)


def print_publishing(systems: dict[str, Any]) -> None:
    """The engine publishing (a business event per state entered, its lifecycle events)
    with a subscriber consuming everything, against the engine as it is, same run."""
    found = systems[PUBLISHING_SYSTEM]
    seen = found.get("subscriber")
    if not seen or "error" in seen:
        reason = (seen or {}).get("error") or found.get("error") or found.get("skipped")
        print(f"publishing: {reason or 'no subscriber figures'}")
        return
    with_it = found["throughput"]["per_second"]
    without = systems.get("orchestrator", {}).get("throughput", {}).get("per_second")
    delay = seen["delay_ms"]
    commands = seen["requests"]["commands"]
    consumed = seen["consumed"] or 1
    caught = seen["caught_up_seconds"]
    base = f"{without:,.0f}" if without else "-"
    rows: list[tuple[str, ...]] = [
        ("publishing, throughput run", "figure"),
        ("workflows/s publishing / not", f"{with_it:,.0f} / {base}"),
        ("  ratio", f"{with_it / without:.3f}" if without else "-"),
        *(
            [("workflows/s publishing, no subscriber", f"{unread:,.0f}")]
            if (unread := found.get("throughput_unread", {}).get("per_second"))
            else []
        ),
        ("workflows", f"{seen['workflows']:,}"),
        ("events published / consumed", f"{seen['published']:,} / {seen['consumed']:,}"),
        ("  per workflow", f"{seen['events_per_workflow']:g}"),
        ("  distinct ids, instances", f"{seen['distinct_ids']:,}, {seen['instances']:,}"),
        *((f"  {kind}", f"{count:,}") for kind, count in seen["by_type"].items()),
        ("published by the last finish", f"{seen['published_by_last_finish']:,}"),
        ("  consumed by then", f"{seen['consumed_by_last_finish']:,}"),
        ("  lag then", f"{seen['lag_at_last_finish']:,}"),
        (
            "last event written, s after the last finish",
            f"{seen['last_written_after_seconds']:.3f}",
        ),
        (
            "all consumed, s after the last finish",
            f"{caught:.3f}" if caught is not None else f"not within {seen['catch_up_limit']:g}",
        ),
        (
            "write to consumed, ms p50 / p99 / max",
            f"{delay['p50']} / {delay['p99']} / {delay['max']}",
        ),
        ("subscriber CPU, s (its loop)", f"{seen['cpu_seconds']:.3f}"),
        ("  per event, us", f"{seen['cpu_seconds'] / consumed * 1e6:,.0f}"),
        ("subscriber round trips per event", f"{seen['requests']['round_trips'] / consumed:.3f}"),
        *(
            (f"  {name} per event", f"{calls / consumed:.3f}")
            for name, calls in sorted(commands.items(), key=lambda kv: -kv[1])
        ),
    ]
    _print_rows(rows, align="<>")


def print_fan(details: dict[str, Any]) -> None:
    """Workload 7: each system's fan-outs, then the engine's map."""
    lines: list[tuple[str, ...]] = [
        ("fan-out/fan-in", "fan-outs", "s", "fan-outs/s", "tasks/s", "trips/task", "cmds/task")
    ]
    commands: list[str] = []
    for name, found in details.get("systems", {}).items():
        part = found.get("throughput")
        if not part:
            lines.append((name, found.get("skipped") or f"FAILED: {found.get('error')}"))
            continue
        lines.append(
            (
                name,
                f"{part['finished']} of {part['workflows']}",
                f"{part['seconds']:.2f}",
                f"{part['per_second']:,.1f}",
                f"{part['tasks_per_second']:,}",
                f"{part['round_trips_per_task']:.2f}",
                f"{part['commands_per_task']:.2f}",
            )
        )
        top = ", ".join(f"{k} {v:g}" for k, v in part["commands_per_task_by_name"].items())
        commands.append(f"  {name}: {top}")
    width = max(len(row) for row in lines)
    _print_rows([row + ("",) * (width - len(row)) for row in lines], align="<" + ">" * 6)
    print("most frequent Redis commands per task (counted on the server, the driver's left out):")
    print("\n".join(commands))
    found = details.get("map", {})
    if "items" not in found:
        print(f"\nmap: {found.get('error', 'not run')}")
        return
    memory = found["used_memory"]
    by_key = found["memory_usage_by_key"]
    watch = found["watch"]
    print()
    _print_rows(
        [
            ("map of one instance", "figure"),
            ("items (max_concurrency)", f"{found['items']:,} ({found['concurrency']})"),
            ("final state", f"{found['status']} in {found['state']}, {found['results']} results"),
            ("start to final state, s", f"{found['seconds']:.3f}"),
            ("start to the last item's answer, s", f"{found['last_item_seconds']:.3f}"),
            ("items per second", f"{found['items_per_second'] or 0:,.0f}"),
            ("used_memory before -> after, B", f"{memory['before']:,} -> {memory['after']:,}"),
            ("  per item, B", f"{found['bytes_per_item']:,.1f}"),
            ("MEMORY USAGE: instance hash, B", f"{by_key['instance hash']:,}"),
            ("MEMORY USAGE: history archive, B", f"{by_key['history archive']:,}"),
            ("MEMORY USAGE: applied-ids set, B", f"{by_key['applied-ids set']:,}"),
            ("most RQ jobs queued or running at once", f"{watch['rq_jobs']}"),
            ("  of them in the queue", f"{watch['rq_queued']}"),
            ("most items in flight (the instance's fan)", f"{watch['tries']}"),
            ("samples (jobs, items in flight)", f"{watch['samples']}, {watch['fan_samples']}"),
            ("Redis round trips per item", f"{found['redis']['round_trips_per_step']:.2f}"),
            ("Redis commands per item", f"{found['redis']['commands_per_step']:.2f}"),
        ],
        align="<>",
    )


def _print_rows(lines: list[tuple[str, ...]], align: str = "<>>>") -> None:
    """Columns separated by two spaces; align holds one of "<" or ">" per column."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    for index, row in enumerate(lines):
        cells = [f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths, strict=False)]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths).rstrip())


def _fmt(fmt: str, value: float) -> str:
    return fmt.format(value) if math.isfinite(value) else "n/a"


def _ratio(a: float, b: float) -> str:
    if not b or not math.isfinite(a) or not math.isfinite(b):
        return "n/a"
    ratio = a / b
    if 0 < ratio < 0.1:
        return f"1/{1 / ratio:,.0f}"  # e.g. 1/5,000: five thousand times fewer
    return f"{ratio:.2f}x"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _hiredis() -> str:
    """Whether redis-py encodes commands and parses replies in C (hiredis) or in Python."""
    from redis.utils import HIREDIS_AVAILABLE

    return _version("hiredis") if HIREDIS_AVAILABLE else "no"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
