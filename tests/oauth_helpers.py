"""Helpers for auth tests: one RSA key pair per session, key and client files for the simulator.

Keys are generated here and never committed; files are written under the test's tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CLIENT_ID = "123-sim.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-CANARYCLIENTSECRET-abc"


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[str, str]:
    """(private PKCS#8 PEM, public PEM) of one 2048-bit key for the whole session."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def sa_email(name: str) -> str:
    return f"{name}@proj.iam.gserviceaccount.com"


def service_account(sim: Any, keys: tuple[str, str], folder: Path, name: str = "bot",
                    sites: dict[str, str] | None = None, register: bool = True) -> Path:
    """Write a service-account key file whose token_uri is the simulator's; register its key."""
    private, public = keys
    if register:
        sim.oauth.add_service_account(sa_email(name), public, sites)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "proj", "private_key_id": f"kid-{name}",
        "private_key": private, "client_email": sa_email(name), "client_id": "1",
        "token_uri": sim.oauth.token_uri}))
    return path


def authorized_user(sim: Any, folder: Path, name: str = "alice",
                    sites: dict[str, str] | None = None) -> Path:
    """Register a person with a refresh token and write their authorized-user file."""
    sim.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    refresh = sim.oauth.add_user(name, CLIENT_ID, sites)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "refresh_token": refresh, "token_uri": sim.oauth.token_uri}))
    return path


def client_secrets(sim: Any, folder: Path) -> Path:
    """An installed-app client-secrets file pointing at the simulator's OAuth endpoints."""
    sim.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    path = folder / "client_secret.json"
    path.write_text(json.dumps({"installed": {
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "project_id": "proj",
        "auth_uri": sim.oauth.auth_uri, "token_uri": sim.oauth.token_uri,
        "redirect_uris": ["http://localhost"]}}))
    return path
