"""The one table the harness prints: scenario, figure, value, target, pass/FAIL."""

from __future__ import annotations

from bench.chaos.scenarios import Outcome

HEADER = ("scenario", "figure", "value", "target", "result")


def render(outcomes: list[Outcome]) -> str:
    lines: list[tuple[str, ...]] = [HEADER]
    for outcome in outcomes:
        name = f"{outcome.scenario} ({outcome.seconds:.0f}s)"
        for index, row in enumerate(outcome.rows):
            verdict = "pass" if row.passed else "FAIL"
            lines.append((name if index == 0 else "", row.figure, row.value, row.target, verdict))
        lines.append(("", "scenario", "", "", "PASS" if outcome.passed else "FAIL"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out: list[str] = []
    for number, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
