"""Draw the README's Explore figures from the simulator: one PNG per analysis in docs/figures/.

    python scripts/figures.py              # or: make figures
    python scripts/figures.py --out DIR    # write them elsewhere
    python scripts/figures.py --db PATH    # keep the database (re-runs then skip the backfill)

A fixed simulated clock and seed make the data the same on every run (for a given polars
version, whose hash the simulator uses): 20 whole weeks of ``sc-domain:example.com`` ending on
a Sunday, backfilled by gsckit itself from the simulator (date,query,page rows, the date-only
totals and date,query,device rows for the bubble chart), then every ``gsckit.explore`` analysis
drawn by ``gsckit.explore.chart`` and rendered by vl-convert (no browser), then stored with a
64-colour palette by Pillow (a tenth of the bytes; charts have few colours). Needs the notebook
extra and the ``figures`` dependency group (Pillow); ``make figures`` installs both.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
import warnings
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
from PIL import Image  # noqa: E402

import gsckit  # noqa: E402
import gsckit.explore as ex  # noqa: E402
from gsckit.sim import SimConfig, Simulator  # noqa: E402

SITE = "sc-domain:example.com"
NOW = datetime(2026, 11, 4, 12)  # a Wednesday: the newest final day is Sunday 1 November
END = date(2026, 11, 1)
START = END - timedelta(weeks=20) + timedelta(days=1)  # a Monday
ROWS_PER_DAY = 5_000
STREAMS = ("date,query,page", "date", "date,query,device")
SCALE = 1.5  # sharp on a high-density screen; about 10-40 KB a figure once shrunk
COLOURS = 64


async def backfill(db: Path) -> None:
    """The 20 weeks of every stream, from a simulator on 127.0.0.1 (skips what ``db`` has)."""
    async with Simulator(SimConfig(rows_per_day=ROWS_PER_DAY, now=NOW, seed=1)) as sim:
        for dimensions in STREAMS:
            report = await gsckit.backfill_async(
                SITE, START, END, dimensions=dimensions, db=db, token="figures",
                base_url=sim.base_url, progress=False, today=NOW.date())
            print(f"{dimensions}: {report.summary().splitlines()[0]}")
        planted = sim.planted_anomalies(SITE, start=START, end=END)
        print("planted anomalies: " + ", ".join(f"{a.day} {a.kind}" for a in planted))


def brand(frame: pl.DataFrame, key: str = "query") -> pl.DataFrame:
    """The frame without brand queries: an analyst reads movers and competition without them."""
    return frame.filter(~pl.col(key).str.contains(r"\bexample\b"))


def analyses(db: gsckit.Database) -> dict[str, tuple[pl.DataFrame, dict[str, Any]]]:
    """Each figure's frame (from the public analyses) and the ``chart`` options it is drawn
    with, in the README's order."""
    terms = ["example"]
    weeks_later = START + timedelta(weeks=4)  # anomalies need four same-weekdays of history
    return {
        "overview": (ex.overview(db, SITE), {"title": "Last 28 days against the 28 before"}),
        "movers": (brand(ex.movers(db, SITE, limit=200)),
                   {"top": 20, "title": "Non-brand queries that gained or lost most clicks"}),
        "striking_distance": (ex.striking_distance(db, SITE),
                              {"top": 20, "title": "Queries at positions 8-20, by opportunity"}),
        "cannibalization": (ex.cannibalization(db, SITE, exclude=terms),
                            {"top": 15, "title": "Queries whose clicks several pages share"}),
        "ctr_curve": (ex.ctr_curve(db, SITE, limit=None),
                      {"title": "CTR by position: the site's curve and its queries"}),
        "brand_split": (ex.brand_split(db, SITE, terms, freq="week", start=START),
                        {"title": "Brand and non-brand clicks per week"}),
        "page_groups": (ex.page_groups(db, SITE), {"title": "Clicks by folder"}),
        "anomalies": (ex.anomalies(db, SITE, start=weeks_later),
                      {"title": "Daily clicks, the expected band and the anomalous days"}),
        "bubble": (ex.breakdown(db, SITE, by="query", color="device", limit=600),
                   {"kind": "bubble", "title": "Queries by CTR and position, per device"}),
    }


def shrink(png: bytes) -> bytes:
    """The PNG on a palette of ``COLOURS`` colours (the charts' background is opaque white)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT,
                             dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, "PNG", optimize=True)
    return out.getvalue()


def draw(db_path: Path, out: Path) -> list[Path]:
    """Render every figure to ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    db = gsckit.open(db_path)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ex.CompletenessWarning)  # the figures rest on whole data
        frames = analyses(db)
    for name, (frame, options) in frames.items():
        path = out / f"{name}.png"
        path.write_bytes(shrink(ex.render(ex.chart(frame, **options), "png", scale=SCALE)))
        written.append(path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{frame.height} rows, {path.stat().st_size / 1024:.0f} KB")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures",
                        help="folder for the PNGs (default: docs/figures)")
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the database here (default: a temporary file)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = args.db or Path(tmp) / "figures.duckdb"
        asyncio.run(backfill(db_path))
        draw(db_path, args.out)
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
