"""The gsckit exception tree.

    GsckitError                      every gsckit error; ``exit_code`` is what the CLI returns
    ├── ConfigError (ValueError)     bad input found before any request (exit 2)
    │   ├── CredentialsError         missing, unreadable or malformed credentials
    │   └── SiteNotReadable          a site no credential can read (pre-flight, exit 2)
    ├── CredentialRefused            the token endpoint refused a grant: revoked key or token
    ├── SiteUnserved                 a pool lost every credential that could read a site
    ├── StoreError                   the DuckDB file cannot be used
    │   ├── DatabaseLocked           another writer, or a busy file past the wait (exit 75)
    │   └── CommitError              a commit failed (disk full, file too large, I/O error)
    ├── TransportError               connection reset, timeout, truncated or invalid body (retried)
    ├── ApiError                     an HTTP error answer from Search Console
    │   ├── RateLimited              429 / 403 rate or load quota (slowed down; load: site paused)
    │   ├── ServerError              500/502/503/504 (retried)
    │   ├── Unauthorized             401 (token refreshed once, then fatal)
    │   ├── PermissionDenied         403 "sufficient permission" (fatal for the site)
    │   ├── SiteNotFound             404 "not a verified site" (fatal for the site)
    │   └── BadRequest               400 (never retried)
    ├── AuditLogError                the audit log cannot be written (the run halts)
    ├── InternalError                an unexpected exception inside gsckit (the run halts)
    └── RunHalted                    a run stopped on an unrecoverable error (cause, report)

Messages never contain a token, key or header: they are built from the site, the status, Google's
reason and message, and a hint for the fix.
"""

from __future__ import annotations

from typing import Any


class GsckitError(Exception):
    """Base of every gsckit error."""

    exit_code = 1


class ConfigError(GsckitError, ValueError):
    """Bad input (dates, site URL, dimensions, filters, options): nothing was sent or written."""

    exit_code = 2


class CredentialsError(ConfigError):
    """Credentials are missing, unreadable or malformed."""


class SiteNotReadable(ConfigError):
    """The pre-flight found a site that no credential can read (names the closest property)."""


class CredentialRefused(GsckitError):
    """The token endpoint refused a credential's grant (``invalid_grant``, a deleted key).

    The message names the credential's source (file path, client_email) and the fix, never a
    secret. Retrying cannot help, so the sites only this credential serves stop.
    """


class SiteUnserved(GsckitError):
    """Mid-run, a credential pool lost every credential that could read a site (revoked, or
    permission removed) while others still serve other sites: that site's remaining days fail
    (the run is incomplete, exit 1) and a re-run with working credentials resumes them."""

    retryable = True  # for the engine: fail this site's days, do not halt the other sites


class StoreError(GsckitError):
    """The DuckDB file cannot be opened or written."""


class DatabaseLocked(StoreError):
    """Another writer holds the file, or it stayed busy past the wait: temporary, retry later.

    Exit code 75 is ``EX_TEMPFAIL`` from sysexits.h: schedulers treat it as "try again".
    """

    exit_code = 75


class CommitError(StoreError):
    """A commit failed; ``committed`` holds the results of the days saved before it."""

    def __init__(self, message: str, committed: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.committed = committed

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.committed))


class TransportError(GsckitError):
    """The request failed below HTTP: connection, timeout, or a truncated/invalid body."""

    retryable = True


class ApiError(GsckitError):
    """An HTTP error answer from the Search Analytics API."""

    retryable = False

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        *,
        site: str = "",
        retry_after: float | None = None,
        hint: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.site = site
        self.retry_after = retry_after
        self.hint = hint
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" for site {self.site!r}" if self.site else ""
        reason = f" {self.reason}" if self.reason else ""
        text = f": {self.message}" if self.message else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"HTTP {self.status}{reason}{where}{text}{hint}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_api_error,
            (type(self), self.status, self.reason, self.message, self.site, self.retry_after,
             self.hint),
        )


def _rebuild_api_error(cls: type[ApiError], *args: Any) -> ApiError:
    status, reason, message, site, retry_after, hint = args
    return cls(status, reason, message, site=site, retry_after=retry_after, hint=hint)


class RateLimited(ApiError):
    """429, or 403 with a quota reason; ``load_quota`` marks Google's 15-minute load quota."""

    retryable = True

    @property
    def load_quota(self) -> bool:
        """A 403 ``quotaExceeded`` / ``dailyLimitExceeded`` (the load quota), not a rate limit."""
        return self.status == 403 and (
            self.reason in ("quotaExceeded", "dailyLimitExceeded")
            or "load quota" in self.message.lower())


class ServerError(ApiError):
    """A 5xx answer: retried with backoff."""

    retryable = True


class Unauthorized(ApiError):
    """401: the access token was rejected."""


class PermissionDenied(ApiError):
    """403 without a quota reason: the credential has no access to the property."""


class SiteNotFound(ApiError):
    """404: the property is not verified for this credential."""


class BadRequest(ApiError):
    """400: the request itself is wrong; retrying cannot help."""


class AuditLogError(GsckitError):
    """The audit log could not be written: the audit trail is a promise, so the run halts."""


class InternalError(GsckitError):
    """An unexpected exception inside gsckit (a bug or a broken environment); the run halts and
    the traceback goes to the audit log."""


class RunHalted(GsckitError):
    """A backfill stopped on an unrecoverable error; completed slices stay committed."""

    def __init__(self, cause: BaseException, report: Any = None) -> None:
        self.cause = cause
        self.report = report
        super().__init__(f"backfill halted: {cause}. Completed days are saved; "
                         "re-run the same command to resume.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cause, self.report))
