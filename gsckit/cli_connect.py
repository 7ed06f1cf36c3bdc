"""The command line's ``sites``, ``doctor`` and ``login`` commands.

A thin layer over :mod:`gsckit.auth`, :mod:`gsckit.sites` and :mod:`gsckit.doctor`, kept apart
from ``cli.py``, which lists :func:`add_connect_commands` in its ``COMMANDS`` and shares its
option groups and help format with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .config import DEFAULT_BASE_URL


def credential_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The library keywords for the options ``cli.add_auth_options`` added."""
    files = args.credentials
    return {"token": args.token, "impersonate": args.impersonate,
            "credentials": files[0] if files and len(files) == 1 else files}


def add_connect_commands(commands: Any) -> None:
    """Mount ``sites``, ``doctor`` and ``login`` on the subcommand parser."""
    from .cli import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, _command, add_auth_options

    def add_base_url(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                            help="API root: Google's, or a loopback URL such as the simulator's")

    sites = _command(commands, "sites", summary="the properties your credentials can read",
                     description="List every property each credential can read (sites.list) "
                     "with its permission level; unverified entries are marked unreadable.",
                     codes=(EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT))
    add_auth_options(sites)
    add_base_url(sites)
    sites.add_argument("--json", action="store_true", help="one JSON object per property")
    sites.set_defaults(handler=_sites)

    doctor = _command(commands, "doctor",
                      summary="check credentials, token, site access, a query and quota",
                      description="Check in order: the credential found, a token and its "
                      "lifetime, what it can read, each SITE's access (with the closest readable "
                      "property and the fix), one small query per site, and the quota headroom.",
                      codes=(EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT))
    doctor.add_argument("site", nargs="*", help="properties to check, e.g. "
                        "sc-domain:example.com (default: only the credential checks)")
    add_auth_options(doctor)
    add_base_url(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as one JSON "
                        "object")
    doctor.set_defaults(handler=_doctor)

    login = _command(commands, "login", summary="sign in to Google in a browser, save the "
                     "credentials", description="Run Google's installed-app OAuth flow with a "
                     "redirect to 127.0.0.1, save the authorized-user JSON (mode 0600) under your "
                     "config directory, and use it automatically afterwards. Needs "
                     "google-auth-oauthlib: pip install 'gsckit[login]'.",
                     codes=(EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT))
    login.add_argument("--credentials", "--client-secrets", dest="client_secrets", required=True,
                       metavar="FILE", help="the OAuth client's JSON (a Desktop app client) "
                       "from Cloud Console")
    login.add_argument("--port", type=int, default=0, help="loopback port for the redirect; 0 "
                       "is any free port (pick one to forward it from a remote kernel)")
    login.add_argument("--no-browser", action="store_true", help="only print the link")
    login.add_argument("--base-url", help="after signing in, list the readable properties "
                       "from this API root (default: do not)")
    login.set_defaults(handler=_login)


def _sites(args: argparse.Namespace) -> int:
    from .sites import sites_async

    frame = asyncio.run(sites_async(base_url=args.base_url, **credential_kwargs(args)))
    if args.json:
        for row in frame.iter_rows(named=True):
            print(json.dumps(row))
    elif frame.height == 0:
        print("these credentials can read no property")
    else:
        import polars as pl

        marked = frame.with_columns(pl.when(pl.col("readable")).then(pl.lit(""))
                                    .otherwise(pl.lit("unverified: no data")).alias("note"))
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80,
                       tbl_hide_dataframe_shape=True):
            print(marked.drop("readable"))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor_async

    diagnosis = asyncio.run(doctor_async(args.site, base_url=args.base_url,
                                         **credential_kwargs(args)))
    print(json.dumps(diagnosis.to_dict()) if args.json else diagnosis.summary())
    return 0 if diagnosis.ok else 1


def _login(args: argparse.Namespace) -> int:
    from .auth import login

    path = login(args.client_secrets, port=args.port,
                 open_browser=False if args.no_browser else None)
    if args.base_url:
        from .sites import sites_async

        frame = asyncio.run(sites_async(base_url=args.base_url, credentials=path))
        print(f"this account can read {int(frame['readable'].sum())} properties "
              "('gsckit sites' lists them)", file=sys.stderr)
    return 0
