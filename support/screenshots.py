"""Take the README's screenshots of the web console: `python -m support.screenshots`.

Why a script: the screenshots are what the browser tests see, so they are taken by
those tests (instances, an instance with its graph and timeline, the overview) in
headless Chromium against a real server and worker, written to docs/screenshots/
instead of the tests' temporary folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = (
    "tests/console/test_console.py::test_instances_filter_and_pages",
    "tests/console/test_console.py::test_an_instance_followed_live_while_the_worker_runs_it",
    "tests/console/test_console.py::test_workflows_and_overview",
)


def main() -> int:
    folder = ROOT / "docs" / "screenshots"
    env = {**os.environ, "CONSOLE_SCREENSHOTS": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode == 0:
        for path in sorted(folder.glob("*.png")):
            print(path.relative_to(ROOT))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
