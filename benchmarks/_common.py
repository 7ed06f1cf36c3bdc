"""Shared helpers for the gsckit benchmarks (not a benchmark itself).

- :class:`SimProcess`: the simulator in its own process (``python -m gsckit sim`` or, when faults
  are needed, ``python benchmarks/_common.py '<json>'``), so its CPU never takes the engine's GIL.
- CPU accounting: our own user+sys (``RUSAGE_SELF``, all threads incl. DuckDB's and polars'), a live
  child's from ``/proc`` (psutil if ``/proc`` is absent), a reaped child's from ``RUSAGE_CHILDREN``.
- Loopback-only HTTP helpers for the simulator's control endpoints, dates inside the API's window,
  percentiles and a plain-text table.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from gsckit.planner import earliest_day, pacific_today  # noqa: E402

TOKEN = "bench-token"
SITE = "sc-domain:bench.example"
DIMENSIONS = ("date", "query", "page")
CORES = os.cpu_count() or 1
KEY_COLUMNS = ("site", "search_type", "dimensions", "filters", "date", "hour", "query", "page",
               "country", "device", "search_appearance")

# urllib must never go through an environment proxy: loopback only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------
# dates


def last_day() -> date:
    """The newest day with final data (Search Console lags 2-3 days)."""
    return pacific_today() - timedelta(days=3)


def day_range(days: int) -> tuple[date, date]:
    """``days`` consecutive days ending at :func:`last_day`, clipped to the 16-month window."""
    end = last_day()
    start = max(end - timedelta(days=days - 1), earliest_day(pacific_today()))
    return start, end


def max_days() -> int:
    """How many days the API serves right now (earliest_day .. last_day)."""
    return (last_day() - earliest_day(pacific_today())).days + 1


# ---------------------------------------------------------------------------------------------
# CPU


def self_cpu() -> float:
    """User+sys seconds of this process (every thread) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """User+sys seconds of every reaped child so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float | None:
    """User+sys seconds of a live process, from /proc (psutil as a fallback), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            data = fh.read()
        fields = data[data.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # only if already installed; not a dependency

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:
        return None


def system_busy_cpu() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores, every process), from /proc/stat.

    Comparing its growth with ours and the simulator's shows how much CPU other processes took
    during a measurement (a shared 2-core machine is noisy).
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    values = [int(v) for v in fields[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_share(cpu_s: float | None, wall_s: float) -> float | None:
    """CPU seconds as a fraction of wall x cores."""
    if cpu_s is None or wall_s <= 0:
        return None
    return cpu_s / (wall_s * CORES)


def rss_mb() -> float | None:
    """Current resident set size of this process in MB (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


# ---------------------------------------------------------------------------------------------
# the simulator in a separate process


class SimProcess:
    """A simulator subprocess on 127.0.0.1 with a free port; use as a context manager.

    ``SimProcess(rows_per_day=..., latency_ms=..., ...)`` runs ``python -m gsckit sim``;
    ``SimProcess(config={...})`` runs this file's server with a full ``SimConfig`` (faults
    included), given as JSON.
    """

    def __init__(self, *, rows_per_day: int = 30_000, latency_ms: float = 0.0,
                 quota_qpm: int = 1200, window_s: float = 60.0, seed: int = 1,
                 config: dict[str, Any] | None = None, start_timeout_s: float = 60.0) -> None:
        if config is None:
            self.argv = [sys.executable, "-m", "gsckit", "sim", "--host", "127.0.0.1",
                         "--port", "0", "--rows-per-day", str(rows_per_day),
                         "--latency-ms", str(latency_ms), "--quota-qpm", str(quota_qpm),
                         "--window-s", str(window_s), "--seed", str(seed)]
        else:
            self.argv = [sys.executable, str(Path(__file__).resolve()), json.dumps(config)]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.cpu_s: float | None = None  # user+sys of the child, set by stop()
        # kept open for the child's whole life, closed in stop()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
                if left > 0:
                    continue
            if line is not None and "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]  # "URL (Ctrl-C to stop)"
                self.base_url = url if url.endswith("/") else url + "/"
                if not self.base_url.startswith("http://127.0.0.1:"):
                    self.stop()
                    raise RuntimeError(f"simulator is not on 127.0.0.1: {self.base_url}")
                return
            if line is None:
                self.stop()
                self._stderr.seek(0)
                raise RuntimeError("simulator did not start:\n" + self._stderr.read()[-2000:])

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def cpu(self) -> float | None:
        """User+sys seconds the live simulator has used so far."""
        return proc_cpu(self.pid) if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        """SIGINT (clean exit), then SIGKILL after 10 s; record the child's CPU after reaping."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        before = children_cpu()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        else:
            proc.wait()
        self.cpu_s = children_cpu() - before
        self._stderr.close()

    # control endpoints --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return http_json(self.base_url + "_sim/stats")

    def reset(self) -> None:
        http_json(self.base_url + "_sim/reset", method="POST")

    def query_url(self, site: str) -> str:
        return f"{self.base_url}webmasters/v3/sites/{quote(site, safe='')}/searchAnalytics/query"


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 60.0,
              raw: bool = False) -> Any:
    """A loopback request; returns parsed JSON (or the raw bytes with ``raw=True``)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"benchmarks talk to 127.0.0.1 only, not {url}")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with _OPENER.open(request, timeout=timeout) as resp:
        payload = resp.read()
    return payload if raw else json.loads(payload)


# ---------------------------------------------------------------------------------------------
# figures


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); p100 is the maximum."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec:
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def machine() -> dict[str, Any]:
    import platform

    return {"cores": CORES, "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------
# a simulator with a full SimConfig (faults), for benchmarks/halt.py


def _serve(spec: str) -> None:
    import asyncio

    from gsckit.sim import Faults, SimConfig, serve

    raw = json.loads(spec)
    faults = raw.pop("faults", None) or {}
    if "script" in faults:
        faults["script"] = {int(k): v for k, v in faults["script"].items()}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(SimConfig(**raw, faults=Faults(**faults)), "127.0.0.1", 0))


if __name__ == "__main__":
    _serve(sys.argv[1])
