"""`make demo`'s two time targets: a first run under 4 minutes, a cached rerun serving in under 60 s.

Runs `psychinterp demo` as a user does (a subprocess, offline, serving on a free port) in a fresh
work folder: it generates the images, copies the shipped weights of the family (training only
where they do not match), builds the bundle, runs the observers over HTTP, writes the report,
runs the unit-kind study and starts serving its three studies. The time to the "serving" line is
taken; on each served study the participant page is fetched and the printed login is used on the
dashboard (as a browser does: form, CSRF token, cookie), and the servers are stopped. Then the same
again on the cached folder. Baseline, in the same run: the first run; the ratio is rerun / first run.
Stage times come from the demo's own output.

Run: .venv/bin/python benchmarks/bench_demo.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

FIRST_TARGET_S = 240.0
RERUN_TARGET_S = 60.0
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psychinterp.scripted import admin_login  # noqa: E402
from tests.server_helpers import free_port  # noqa: E402


def run_until_serving(workdir: Path) -> tuple[float, list[str]]:
    port = free_port()
    command = [sys.executable, "-m", "psychinterp", "demo", "--workdir", str(workdir), "--port", str(port)]
    env = {**os.environ, "PSYCHINTERP_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}  # lines as they come
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if line.startswith("serving "):
                elapsed = time.perf_counter() - started
                break
        else:
            raise SystemExit("the demo ended without serving:\n" + "\n".join(lines[-20:]))
        served = [m.groups() for line in lines if (m := SERVED.search(line))]
        assert len(served) == 3, f"the demo printed {len(served)} served studies, not 3"
        for url, username, password in served:
            with httpx.Client(base_url=url, timeout=10) as client:
                for _ in range(100):  # waitress binds just after printing
                    try:
                        assert client.get("/").status_code == 200
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                assert "Progress" in admin_login(client, username, password)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return elapsed, lines


STAGE = re.compile(r"^\[\s*(\d+) s\] (.*)$")
SERVED = re.compile(r"participant URL (\S+)/  admin URL \S+  login: (\S+) / (\S+)$")


def stage_lines(lines: list[str]) -> list[tuple[int, str]]:
    """The demo's stage lines: seconds since its start, and what began or ended then."""
    return [(int(m.group(1)), m.group(2)) for line in lines if (m := STAGE.match(line))]


def stage_times(lines: list[str]) -> str:
    trained = [m.group(0) for line in lines if (m := re.search(r"trained \S+ in [\d.]+ s", line))]
    return "; ".join(trained) or "no training: the shipped weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp) / "demo"
        first, first_lines = run_until_serving(workdir)
        print(f"first run: serving after {first:.1f} s ({stage_times(first_lines)})")
        for seconds, what in stage_lines(first_lines):
            print(f"  {seconds:>5} s  {what}")
        rerun, _ = run_until_serving(workdir)
        print(f"cached rerun: serving after {rerun:.1f} s")
    ratio = rerun / first
    # each line its own verdict: a slow first run does not fail a quick rerun
    first_verdict = "PASS" if first < FIRST_TARGET_S else "FAIL"
    rerun_verdict = "PASS" if rerun < RERUN_TARGET_S else "FAIL"
    print(f"RESULT demo_first_run {first:.0f} s target <{FIRST_TARGET_S:.0f} {first_verdict}")
    print(
        f"RESULT demo_cached_rerun {rerun:.1f} s target <{RERUN_TARGET_S:.0f} (ratio {ratio:.3f} to first) "
        f"{rerun_verdict}"
    )
    sys.exit(0 if first_verdict == rerun_verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
