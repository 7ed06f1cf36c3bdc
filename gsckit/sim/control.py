"""The ``/_sim/*`` control endpoints: drive and inspect a simulator running in another process.

``GET /_sim/stats``, ``POST /_sim/reset``, ``POST /_sim/revise?site=&day=``;
``GET /_sim/clock`` (now, today, newest final day) and ``POST /_sim/clock`` (``now=ISO`` sets
the clock, ``days=``/``hours=``/``minutes=`` advance it; answers like GET); ``GET /_sim/truth``
and ``GET /_sim/totals`` (``site``, ``day``, optional ``end``, ``type``, ``dimensions=a,b``,
``filters=<JSON list>``, ``data_state``; truth also takes ``capped=0`` and ``final=1``);
``GET /_sim/anomalies?site=&type=&start=&end=`` and ``GET /_sim/brand?site=``. Bad parameters
answer 400 with ``{"error": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ConfigError

if TYPE_CHECKING:
    from .server import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _day(query: Mapping[str, str], name: str) -> date | None:
    value = query.get(name)
    return date.fromisoformat(value) if value else None


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "0").lower() in ("1", "true", "yes")


def _slice_args(query: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments a truth method takes, from query parameters."""
    return {"search_type": query.get("type", "web"),
            "filters": json.loads(query.get("filters", "[]")),
            "end": _day(query, "end")}


def _guarded(handler: Callable[[web.Request], web.Response]) -> Handler:
    """A handler whose bad parameters answer 400 with the reason."""
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return handler(request)
        except (KeyError, ValueError, TypeError, ConfigError) as exc:
            reason = f"missing parameter {exc}" if isinstance(exc, KeyError) else str(exc)
            return web.json_response({"error": f"bad request: {reason}"}, status=400)
    return run


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    """Register the control endpoints of ``sim`` on ``app``."""

    def stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    def reset(request: web.Request) -> web.Response:
        sim.reset_stats()
        return web.json_response({"ok": True})

    def revise(request: web.Request) -> web.Response:
        sim.revise(request.query.get("site"), _day(request.query, "day"))
        return web.json_response({"ok": True})

    def clock(request: web.Request) -> web.Response:
        q = request.query
        if request.method == "POST":
            if "now" in q:
                sim.set_now(q["now"])
            steps = {k: float(q[k]) for k in ("days", "hours", "minutes") if k in q}
            if steps:
                sim.advance(**steps)
        return web.json_response(sim.summary())

    def truth(request: web.Request) -> web.Response:
        q = request.query
        dims = [d for d in q.get("dimensions", "date,query,page").split(",") if d]
        args = _slice_args(q)
        site, day = q["site"], date.fromisoformat(q["day"])
        if _flag(q, "final"):
            frame = sim.final_truth(site, day, dimensions=dims, **args)
        elif q.get("capped", "1") == "0":
            frame = sim.uncapped_truth(site, day, dimensions=dims,
                                       data_state=q.get("data_state", "final"), **args)
        else:
            frame = sim.ground_truth(site, day, dimensions=dims,
                                     data_state=q.get("data_state", "final"), **args)
        return web.Response(text='{"rows":' + frame.write_json() + "}",
                            content_type="application/json")

    def totals(request: web.Request) -> web.Response:
        q = request.query
        found = sim.totals(q["site"], date.fromisoformat(q["day"]),
                           data_state=q.get("data_state", "final"), final=_flag(q, "final"),
                           **_slice_args(q))
        return web.json_response({**asdict(found),
                                  "hidden_clicks_share": found.hidden_clicks_share})

    def anomalies(request: web.Request) -> web.Response:
        q = request.query
        found = sim.planted_anomalies(q["site"], q.get("type", "web"), _day(q, "start"),
                                      _day(q, "end"))
        return web.json_response({"anomalies": [
            {"day": a.day.isoformat(), "kind": a.kind, "factor": a.factor} for a in found]})

    def brand(request: web.Request) -> web.Response:
        return web.json_response({"brand_terms": list(sim.brand_terms(request.query["site"]))})

    app.router.add_get("/_sim/stats", _guarded(stats))
    app.router.add_post("/_sim/reset", _guarded(reset))
    app.router.add_post("/_sim/revise", _guarded(revise))
    app.router.add_get("/_sim/clock", _guarded(clock))
    app.router.add_post("/_sim/clock", _guarded(clock))
    app.router.add_get("/_sim/truth", _guarded(truth))
    app.router.add_get("/_sim/totals", _guarded(totals))
    app.router.add_get("/_sim/anomalies", _guarded(anomalies))
    app.router.add_get("/_sim/brand", _guarded(brand))
