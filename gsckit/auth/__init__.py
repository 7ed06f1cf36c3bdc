"""Connecting to Google: credential sources, their token lifecycle, and the login for people.

``credentials`` holds the objects that yield tokens (static, callable, google-auth);
``sources`` finds and loads them in a documented order; ``login`` runs the installed-app OAuth
flow. Nothing here sends a request until a token is first needed.
"""

from __future__ import annotations

from .credentials import (
    SCOPE,
    TOKEN_ENV,
    CallableToken,
    Credentials,
    GoogleCredentials,
    StaticToken,
    TokenSource,
    check_token,
)
from .login import login
from .sources import (
    ADC_ENV,
    NO_CREDENTIALS,
    FileArg,
    TokenArg,
    config_dir,
    from_environment,
    from_file,
    gcloud_adc_path,
    impersonated,
    login_path,
    resolve,
    resolve_all,
)

__all__ = [
    "ADC_ENV",
    "NO_CREDENTIALS",
    "SCOPE",
    "TOKEN_ENV",
    "CallableToken",
    "Credentials",
    "FileArg",
    "GoogleCredentials",
    "StaticToken",
    "TokenArg",
    "TokenSource",
    "check_token",
    "config_dir",
    "from_environment",
    "from_file",
    "gcloud_adc_path",
    "impersonated",
    "login",
    "login_path",
    "resolve",
    "resolve_all",
]
