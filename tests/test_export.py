"""The Parquet hand-off: Hive partitions written by DuckDB, read back equal to the table, and a
re-export that rewrites only the partitions whose days changed."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

import gsckit
from gsckit import ConfigError, Slice
from gsckit.cli import main
from gsckit.export import MANIFEST
from gsckit.store import Store

SITES = ("sc-domain:example.com", "https://www.example.com/shop/")
DAYS = [date(2026, 1, 29) + timedelta(days=i) for i in range(6)]  # January and February


def rows(day: date, version: int = 0, n: int = 4) -> pl.DataFrame:
    clicks = [10 * (i + 1) + day.day + version for i in range(n)]
    return pl.DataFrame({
        "query": [f"q{i}" for i in range(n)],
        "page": [f"https://www.example.com/p{i}" for i in range(n)],
        "clicks": pl.Series(clicks, dtype=pl.Int64),
        "impressions": pl.Series([c * 10 for c in clicks], dtype=pl.Int64),
        "ctr": [0.1] * n,
        "position": [1.5 + i for i in range(n)],
    })


def commit(path: Path, site: str, day: date, frame: pl.DataFrame, search_type: str = "web",
           dims: tuple[str, ...] = ("date", "query", "page")) -> None:
    with Store(path) as store:
        store.commit_slice(Slice(site, search_type, dims, (), "final", day), frame, pages=1,
                           requests=1, run_id="t")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "gsc.duckdb"
    with Store(path) as store:
        for site in SITES:
            for day in DAYS:
                for search_type in ("web", "image"):
                    store.commit_slice(Slice(site, search_type, ("date", "query", "page"), (),
                                             "final", day), rows(day), pages=1, requests=1,
                                       run_id="t")
                totals = rows(day).select("clicks", "impressions", "ctr", "position").head(1)
                store.commit_slice(Slice(site, "web", ("date",), (), "final", day), totals,
                                   pages=1, requests=1, run_id="t")
    return path


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    """A private copy of the module's database: some tests commit to it."""
    path = tmp_path / "gsc.duckdb"
    shutil.copyfile(built, path)
    return path


def utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Timestamps in one spelling of UTC (DuckDB may name the same zone 'Etc/UTC')."""
    return frame.with_columns(pl.col(pl.Datetime("us", "*")).dt.convert_time_zone("UTC"))


def table(path: Path) -> pl.DataFrame:
    frame = utc(gsckit.open(path).sql("SELECT * FROM search_analytics"))
    return frame.sort(frame.columns)


def read_back(folder: Path, derived: tuple[str, ...] = ("month",)) -> pl.DataFrame:
    frame = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect()
    return utc(frame.drop(*derived))


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every Parquet file with its inode and modification time: a rewrite changes both."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*.parquet")}


def test_export_reads_back_equal_to_the_table(db, tmp_path):
    out = tmp_path / "export"
    report = gsckit.open(db).export_parquet(out)
    want = table(db)
    got = read_back(out).select(want.columns)
    assert got.sort(got.columns).equals(want)
    assert report.rows == want.height == 2 * 6 * (4 + 4 + 1)
    assert (report.written, report.unchanged, report.removed) == (4, 0, 0)
    partitions = sorted(str(p.relative_to(out)) for p in out.glob("*/*") if p.is_dir())
    assert partitions == sorted(report.paths) == [
        "site=https%3A%2F%2Fwww.example.com%2Fshop%2F/month=2026-01",
        "site=https%3A%2F%2Fwww.example.com%2Fshop%2F/month=2026-02",
        "site=sc-domain%3Aexample.com/month=2026-01",
        "site=sc-domain%3Aexample.com/month=2026-02",
    ]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["partition_by"] == ["site", "month"]
    entry = manifest["partitions"]["sc-domain:example.com\x1f2026-01"]
    assert (entry["days"], entry["rows"]) == (3 * 3, 3 * (4 + 4 + 1))
    assert entry["exported_at"] and entry["first"] == "2026-01-29"


def test_a_re_export_rewrites_only_the_partitions_whose_days_changed(db, tmp_path):
    out = tmp_path / "export"
    gsckit.open(db).export_parquet(out)
    before = files(out)
    again = gsckit.open(db).export_parquet(out)
    assert (again.written, again.unchanged, again.rows) == (0, 4, 0)
    assert files(out) == before
    # a re-fetched day: Google revised 2026-02-01 of one site's image rows
    commit(db, SITES[0], date(2026, 2, 1), rows(date(2026, 2, 1), version=7), "image")
    third = gsckit.open(db).export_parquet(out)
    changed = "site=sc-domain%3Aexample.com/month=2026-02"
    assert third.paths == (changed,) and (third.written, third.unchanged) == (1, 3)
    after = files(out)
    assert {k for k in after if after[k] != before.get(k)} == {
        k for k in after if k.startswith(changed)}
    want = table(db)
    got = read_back(out).select(want.columns)
    assert got.sort(got.columns).equals(want)


def test_a_day_in_a_new_month_adds_one_partition(db, tmp_path):
    out = tmp_path / "export"
    gsckit.open(db).export_parquet(out, partition_by="site,year")
    before = files(out)
    commit(db, SITES[1], date(2026, 3, 2), rows(date(2026, 3, 2)))
    report = gsckit.open(db).export_parquet(out, partition_by=["site", "year"])
    assert report.paths == ("site=https%3A%2F%2Fwww.example.com%2Fshop%2F/year=2026",)
    assert all(files(out)[k] == v for k, v in before.items() if "shop" not in k)
    back = read_back(out, ("year",))
    assert back.filter(pl.col("date") == date(2026, 3, 2)).height == 4
    assert back.height == table(db).height


def test_changing_the_partitioning_needs_full(db, tmp_path):
    out = tmp_path / "export"
    gsckit.open(db).export_parquet(out)
    with pytest.raises(ConfigError, match="was exported with partition_by 'site,month'"):
        gsckit.open(db).export_parquet(out, partition_by="search_type")
    report = gsckit.open(db).export_parquet(out, partition_by="search_type", full=True)
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST, "search_type=image", "search_type=web"]
    assert report.written == 2
    want = table(db)
    got = read_back(out, ()).select(want.columns)
    assert got.sort(got.columns).equals(want)


def test_the_export_command(db, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(db), "--to", str(out), "--partition-by", "site", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 2 and summary["rows"] == table(db).height
    assert main(["export", str(db), "--to", str(out), "--partition-by", "site"]) == 0
    assert "0 partitions" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--partition-by", "site,country"], "unknown partition key 'country'"),
    (["--partition-by", "site,site"], "repeats a key"),
    (["--partition-by", ","], "at least one key"),
])
def test_bad_export_arguments_exit_2_with_one_line(db, tmp_path, capsys, argv, message):
    out = tmp_path / "export"
    assert main(["export", str(db), "--to", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_foreign_folder_or_a_missing_database_is_refused(db, tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    assert main(["export", str(db), "--to", str(foreign)]) == 2
    assert "not empty and holds no gsckit export" in capsys.readouterr().err
    assert os.listdir(foreign) == ["cat.jpg"]
    assert main(["export", str(tmp_path / "none.duckdb"), "--to", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
