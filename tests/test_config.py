"""Engine settings are validated once, at construction."""

import dataclasses

import pytest

from gsckit import ConfigError, EngineConfig, RetryPolicy, Timeouts


def test_defaults_follow_the_design_note():
    cfg = EngineConfig()
    assert (cfg.max_concurrency, cfg.qpm, cfg.qpm_window_s) == (8, 960, 60.0)
    assert (cfg.queue_size, cfg.max_unpersisted, cfg.row_limit) == (1000, 10, 25_000)
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
                                    {"queue_size": 5}, {"qpm_window_s": 0}])
def test_out_of_range_settings_are_refused(change):
    with pytest.raises(ConfigError):
        dataclasses.replace(EngineConfig(), **change)


def test_nested_policies_validate_too():
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        Timeouts(total=5, sock_read=60)
