"""A pool of credentials: which ones serve each site, and which one sends the next request.

Google counts 1,200 queries per minute per user across all of that user's properties, so
several credentials that can read the same properties multiply what a backfill can send. Each
site is served by the credentials that can read it (the pre-flight's ``sites.list``); each
request takes the serving credential with the fewest requests outstanding (waiting for the rate
limiter or in flight), so a site's requests spread over its credentials and every credential's
own per-user limit fills evenly. A credential whose grant is refused leaves the pool; one that
loses its permission on a site stops serving that site. Its sites move to the others where they
can, and :attr:`CredentialPool.notes` says what happened for the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import CredentialRefused, SiteUnserved
from .credentials import Credentials

Emit = Callable[..., None]


class CredentialPool:
    """Credentials with the sites each serves; ``serving=None`` lets every one serve any site."""

    def __init__(self, members: Sequence[Credentials],
                 serving: Mapping[str, Sequence[Credentials]] | None = None,
                 emit: Emit | None = None) -> None:
        if not members:
            raise ValueError("a credential pool needs at least one credential")
        self.members = list(members)
        self._serving = None if serving is None else {s: list(c) for s, c in serving.items()}
        self._busy = {id(c): 0 for c in self.members}
        self._turn = 0
        self._lost: dict[int, CredentialRefused] = {}
        self._emit = emit or (lambda *a, **k: None)
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"CredentialPool({', '.join(c.identity for c in self.members)})"

    def __len__(self) -> int:
        return len(self.members)

    def serving(self, site: str) -> list[Credentials]:
        """The live credentials that may send ``site``'s requests."""
        candidates = self.members if self._serving is None else self._serving.get(site, [])
        return [c for c in candidates if id(c) not in self._lost]

    def pick(self, site: str) -> Credentials:
        """The serving credential with the fewest outstanding requests (ties rotate)."""
        candidates = self.serving(site)
        if not candidates:
            raise self._unserved(site)
        self._turn += 1
        return min(candidates, key=lambda c: (self._busy[id(c)],
                                              (self.members.index(c) - self._turn) % len(self)))

    def begin(self, creds: Credentials) -> None:
        """Count a request as outstanding on ``creds`` (until :meth:`end`)."""
        self._busy[id(creds)] += 1

    def end(self, creds: Credentials) -> None:
        self._busy[id(creds)] -= 1

    def lose(self, creds: Credentials, error: CredentialRefused) -> None:
        """Take a credential whose grant was refused out of the pool."""
        if id(creds) in self._lost:
            return
        self._lost[id(creds)] = error
        moved = self._moved_sites(creds)
        self._note("credential_lost", f"{creds.source} was refused and left the pool"
                   + (f"; its sites moved to the other credentials: {', '.join(moved)}"
                      if moved else ""), credential=creds.identity)

    def drop(self, site: str, creds: Credentials, reason: str) -> bool:
        """Stop ``creds`` serving ``site`` (its permission was removed); return whether
        another credential still serves it."""
        if self._serving is None:
            self._serving = {}
        members = self._serving.setdefault(site, [c for c in self.members
                                                  if id(c) not in self._lost])
        if creds in members:
            members.remove(creds)
            left = bool(self.serving(site))
            self._note("site_moved", f"{creds.source} lost access to {site!r} ({reason})"
                       + ("; its requests moved to the other credentials" if left else ""),
                       credential=creds.identity, site=site)
        return bool(self.serving(site))

    def _moved_sites(self, creds: Credentials) -> list[str]:
        if self._serving is None:
            return ["all"] if self.serving("") else []
        return sorted(s for s, members in self._serving.items()
                      if creds in members and self.serving(s))

    def _unserved(self, site: str) -> Exception:
        if len(self._lost) == len(self.members):
            return next(reversed(self._lost.values()))  # nothing left: the run halts
        return SiteUnserved(f"no credential can read {site!r} any more ("
                            + "; ".join(self.notes[-3:]) + "); its remaining days are not "
                            "fetched: fix the credentials and re-run to resume")

    def _note(self, kind: str, text: str, **data: Any) -> None:
        self.notes.append(text)
        self._emit(kind, message=text, **data)
