"""The errors an answer can give, as HTTP will say them, and how client input is echoed in them."""

from __future__ import annotations

from http import HTTPStatus

from helios_pipelines.core.ops.plans import PlanLimitError
from helios_pipelines.core.ops.store import CustomerDisabledError

ECHO_LIMIT = 64  # characters of a client's value repeated in an error message


class RequestError(ValueError):
    """A request the tenant cannot answer as asked; the message says what to change (HTTP 400)."""


class NotFoundError(KeyError):
    """An unknown metric, service or tenant (HTTP 404)."""

    def __str__(self) -> str:
        return self.args[0]


class ForbiddenError(PermissionError):
    """The caller's key may not see what it asked for (HTTP 403)."""


class TenantUnavailableError(RuntimeError):
    """A tenant's own state (its source, a model) failed; only that tenant's answers are affected (HTTP 503)."""


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters: an error never echoes a
    megabyte back to whoever sent it."""
    text = str(value)
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[:limit]}...' ({len(text)} characters)"


#: Validation errors an answer names; the rest are counted (a body of many bad keys is not echoed whole).
ERRORS_NAMED = 5


def invalid_fields(errors: list[dict], sourced: bool = False) -> str:
    """Validation errors (pydantic's ``errors()``) as one line naming each field (cut as ``shown`` cuts)
    and its problem. ``sourced``: FastAPI's errors, whose location starts with where the parameter came
    from (``query``, ``path``, ``body``), named as "query parameter 'horizon'"."""

    def one(error: dict) -> str:
        location = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")  # a validator's own message, as tenants' errors
        if not location:
            return message  # a rule across fields: its message names them
        if sourced:  # FastAPI's: where the parameter came from, then its name
            source, location = location[0], location[1:]
            return f"{source} parameter {shown('.'.join(location))}: {message}" if location else f"{source}: {message}"
        return f"field {shown('.'.join(location))}: {message}"

    named = "; ".join(one(error) for error in errors[:ERRORS_NAMED])
    return named + (f"; and {len(errors) - ERRORS_NAMED} more" if len(errors) > ERRORS_NAMED else "")


# The one mapping of domain errors to HTTP statuses: serving/service.py renders it for BentoML's routes
# and for the plain FastAPI ones, each answering {"error": the message} with the status.
STATUS: dict[type[Exception], HTTPStatus] = {
    NotFoundError: HTTPStatus.NOT_FOUND,
    RequestError: HTTPStatus.BAD_REQUEST,
    ForbiddenError: HTTPStatus.FORBIDDEN,
    PlanLimitError: HTTPStatus.FORBIDDEN,  # the tenant's plan lacks the feature
    CustomerDisabledError: HTTPStatus.FORBIDDEN,
    TenantUnavailableError: HTTPStatus.SERVICE_UNAVAILABLE,
}
DOMAIN_ERRORS = tuple(STATUS)


def status_of(error: Exception) -> HTTPStatus:
    return next(status for kind, status in STATUS.items() if isinstance(error, kind))
