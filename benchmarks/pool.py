"""Credential pool: the same quota-bound backfill of 8 sites with 1 and with 3 credentials.

Each credential is a service account that signs its own JWTs against the simulator's token
endpoint and can read all 8 sites. Google's per-user quota binds one credential (gsckit sends at
most ``qpm`` per window per credential and per site), so 3 credentials should reach about 3x the
request rate of one; the per-site limit (``qpm`` for each of the 8 sites) does not bind. Time is
scaled: ``--qpm 60 --window-s 6`` is 10 requests/s per credential, the shape of 960/min in a
minute. The script prints wall time, the achieved rate, the server-measured peak per credential
and per site in any window, 429s, and the ratio (target >= 2.7x). The last line is JSON.

    python benchmarks/pool.py                     # ~40 s
    python benchmarks/pool.py --qpm 960 --window-s 60 --days 60   # real time (minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

from gsckit import EngineConfig, backfill_async
from gsckit.sim import SimConfig, Simulator

SITES = [f"sc-domain:site{i}.example" for i in range(8)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qpm", type=int, default=60, help="gsckit's limit per window (default 60)")
    p.add_argument("--window-s", type=float, default=6.0, help="rate window (default 6 s)")
    p.add_argument("--days", type=int, default=30, help="days per site (default 30)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="simulated latency")
    p.add_argument("--concurrency", type=int, default=16, help="worker tasks (default 16)")
    return p.parse_args(argv)


def make_key() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def key_file(sim: Simulator, folder: Path, name: str, keys: tuple[str, str]) -> Path:
    email = f"{name}@bench.iam.gserviceaccount.com"
    sim.oauth.add_service_account(email, keys[1], dict.fromkeys(SITES, "siteOwner"))
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": email,
                                "private_key": keys[0], "private_key_id": name,
                                "token_uri": sim.oauth.token_uri}))
    return path


async def one_run(args: argparse.Namespace, credentials: int, keys: tuple[str, str],
                  folder: Path) -> dict[str, Any]:
    config = SimConfig(rows_per_day=50, latency_s=args.latency_ms / 1000,
                       quota_qpm=int(args.qpm * 1.25), window_s=args.window_s)
    async with Simulator(config) as sim:
        files = [key_file(sim, folder, f"sa{credentials}-{i}", keys)
                 for i in range(credentials)]
        start, end = c.day_range(args.days)
        db = folder / f"pool-{credentials}.duckdb"
        cfg = EngineConfig(qpm=args.qpm, qpm_window_s=args.window_s,
                           max_concurrency=args.concurrency)
        began = time.perf_counter()
        report = await backfill_async(SITES, start, end, db=db, credentials=files, config=cfg,
                                      base_url=sim.base_url, progress=False)
        wall = time.perf_counter() - began
        stats = sim.stats()
    return {"credentials": credentials, "ok": report.ok, "requests": report.requests,
            "wall_s": round(wall, 2), "rate_per_s": round(report.requests / wall, 2),
            "peak_per_credential": max(stats["peak_window_by_token"].values()),
            "peak_per_site": max(stats["peak_window_by_site"].values()),
            "rate_limited": stats["rate_limited"], "duplicates": stats["duplicates"]}


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = make_key()
    with tempfile.TemporaryDirectory(prefix="gsckit-pool-") as tmp:
        rows = [await one_run(args, n, keys, Path(tmp)) for n in (1, 3)]
    ratio = rows[1]["rate_per_s"] / rows[0]["rate_per_s"]
    limit = args.qpm / args.window_s
    print(f"8 sites x {args.days} days, {args.qpm} requests per {args.window_s:g} s per "
          f"credential and per site ({limit:g}/s), latency {args.latency_ms:g} ms, "
          f"{args.concurrency} workers")
    headers = ["credentials", "requests", "wall_s", "rate_per_s", "peak_per_credential",
               "peak_per_site", "rate_limited", "duplicates", "ok"]
    print(c.table(headers, [[r[h] for h in headers] for r in rows]))
    print(f"throughput ratio 3 vs 1 credential: {ratio:.2f}x (target >= 2.7x)")
    print(json.dumps({"ratio": round(ratio, 3), "runs": rows}))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
