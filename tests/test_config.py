"""Engine settings are validated once, at construction."""

import dataclasses

import pytest

from gsckit import ConfigError, EngineConfig, RetryPolicy, Timeouts


def test_defaults_follow_the_design_note():
    cfg = EngineConfig()
    assert (cfg.max_concurrency, cfg.qpm, cfg.qpm_window_s) == (8, 960, 60.0)
    assert (cfg.queue_size, cfg.max_unpersisted_pages, cfg.row_limit) == (1000, None, 25_000)
    assert cfg.unpersisted_pages == 16 and EngineConfig(max_concurrency=16).unpersisted_pages == 32
    assert EngineConfig(max_unpersisted_pages=5).unpersisted_pages == 5
    assert cfg.base_url == "https://searchconsole.googleapis.com/"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:1/",
                                 "https://www.googleapis.com", "http://[::1]:9/"])
def test_google_and_loopback_roots_are_accepted(url):
    assert EngineConfig(base_url=url).base_url.endswith("/")


@pytest.mark.parametrize("url", ["https://evil.example.com/", "http://169.254.169.254/",
                                 "http://10.0.0.1/", "file:///etc/passwd",
                                 "https://searchconsole.googleapis.com.evil.io/",
                                 "http://user:pw@127.0.0.1/"])
def test_other_hosts_never_receive_the_token(url):
    with pytest.raises(ConfigError):
        EngineConfig(base_url=url)


@pytest.mark.parametrize("change", [{"max_concurrency": 0}, {"qpm": 0}, {"row_limit": 25_001},
                                    {"queue_size": 5}, {"qpm_window_s": 0}, {"qpm": 1_201},
                                    {"max_unpersisted_pages": 0}, {"rate_decrease": 1.0},
                                    {"rate_increase": 0}])
def test_out_of_range_settings_are_refused(change):
    with pytest.raises(ConfigError):
        dataclasses.replace(EngineConfig(), **change)


def test_nested_policies_validate_too():
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        Timeouts(total=5, sock_read=60)


def test_a_qpm_above_googles_1200_is_refused_before_any_request(tmp_path, capsys):
    from gsckit.cli import main

    db = tmp_path / "gsc.duckdb"
    code = main(["backfill", "sc-domain:example.com", "--start", "2026-01-01", "--end",
                 "2026-01-02", "--db", str(db), "--token", "t", "--qpm", "1201",
                 "--base-url", "http://127.0.0.1:9/"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "qpm must be 1..1200" in err and "1201" in err
    assert not db.exists()
    # the limit is per window: a scaled window (tests, the simulator) keeps its meaning
    assert EngineConfig(qpm=1_200, qpm_window_s=1.5).qpm == 1_200
