"""Ticket routes, served under `/v1/tickets` and, as the seed writes them, `/tickets`.

Access rule: a ticket is visible only to the user who created it. Another user's ticket answers
403 (it exists, but is not yours) and an unknown or malformed id answers 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Scope

from keel.core.app import error_responses
from keel.core.context import current_request_id
from keel.core.deps import wired
from keel.core.events import dumps
from keel.core.fastpath import FastPost, FastResponse, FastRoute, header, raw_headers
from keel.core.identity import Authenticator, _user_header, authenticator_of
from keel.core.ratelimit import RateLimiter
from keel.tickets.model import Created
from keel.tickets.schemas import Attachment, Ticket, TicketCreate, TicketStatus
from keel.tickets.service import TicketService

UPLOAD_CHUNK = 256 * 1024
JSON = "application/json"
PREFIXES = ("/v1/tickets", "/tickets")
DEFAULT_LIMIT = 50
# The error statuses of the routes (OpenAPI): any route, and a route on one of the caller's tickets.
COMMON = error_responses(401, 422, 429)
OWNED = error_responses(401, 403, 404, 422, 429)


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    service: TicketService


# What the wiring built, typed (keel.core.deps).
ticket_service = wired("tickets", TicketService)
rate_limiter = wired("tickets_rate_limiter", RateLimiter)


# One `async def` dependency for the caller and the service: every dependency costs a
# `solve_dependencies` pass per request, and a plain `def` one a thread-pool hop on top
# (bench/results/profile-tickets-create.md). So the service is awaited here, not declared.
# `_user_header` declares the header in the OpenAPI document; the authenticator reads the scope.
async def _caller(request: Request, _: Annotated[str | None, Depends(_user_header)]) -> Caller:
    identity = await authenticator_of(request).identify(request.scope)
    return Caller(identity.user, await ticket_service(request))


CallerDep = Annotated[Caller, Depends(_caller)]


# Mounted only when a limit is configured, and then the wiring has built the limiter.
async def _rate_limit(request: Request, caller: CallerDep) -> None:
    await (await rate_limiter(request)).check(caller.user)


def _request_id(request: Request) -> str | None:
    value: str | None = request.scope.get("state", {}).get("request_id")
    return value


def list_fast_routes(
    service: TicketService, authenticator: Authenticator, limiter: RateLimiter | None = None
) -> list[FastRoute]:
    """`GET /v1/tickets` (no query: the first page) from this process's recent pages, ahead of the
    FastAPI stack. Anything else (no page in hand, a query, a missing or invalid user) takes the
    FastAPI route, which stays the reference. With a rate limit, a page answered here is counted
    here, once (a declined one is counted by the route)."""

    def first_page(scope: Scope) -> tuple[str, bytes] | None:
        if scope["query_string"]:
            return None
        identity = authenticator.known(scope)
        if identity is None:
            return None
        page = service.recent_page(identity.user, None, DEFAULT_LIMIT, 0)
        return None if page is None else (identity.user, page.json)

    def from_memory(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        found = first_page(scope)
        if found is None or (limiter is not None and not limiter.take_leased(found[0])):
            return None  # no page in hand, or the limiter must ask its store: `recent_first_page`
        return FastResponse(found[1])

    async def recent_first_page(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        found = first_page(scope)
        if found is None:
            return None
        if limiter is not None:
            await limiter.check(found[0])  # over the limit: 429 in the envelope, from the edge
        return FastResponse(found[1])

    # The limiter's store may be Redis: then the handler awaits I/O and the deadline applies; a page
    # in hand whose caller holds a leased permit is answered without either.
    return [
        FastRoute(prefix, recent_first_page, awaits_io=limiter is not None, from_memory=from_memory)
        for prefix in PREFIXES
    ]


MAX_IDEMPOTENCY_KEY_HEADER = 200
REPLAYED = {"Idempotent-Replayed": "true"}


def _created_response(created: Created) -> Response:
    headers = REPLAYED if created.replayed else None
    return Response(dumps(created.ticket), status_code=201, media_type=JSON, headers=headers)


def create_fast_routes(
    service: TicketService, authenticator: Authenticator, limiter: RateLimiter | None, max_body_bytes: int
) -> list[FastPost]:
    """`POST /v1/tickets` ahead of the FastAPI stack, which costs a create about as much CPU as the
    use case itself. It answers a body the route's model takes, with an Idempotency-Key the route
    takes, in the order of the route's dependencies: the caller (401), the limit (429), the use case.
    Any other request (a body or key the route refuses, a query) takes the FastAPI route and its 422."""
    replayed = raw_headers(REPLAYED)

    async def create(scope: Scope, params: dict[str, str], body: bytes) -> FastResponse | None:
        if scope["query_string"]:
            return None
        try:
            data = TicketCreate.model_validate_json(body)
        except ValidationError:
            return None
        key = header(scope, b"idempotency-key")
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_HEADER:
            return None
        user = (await authenticator.identify(scope)).user
        if limiter is not None:
            await limiter.check(user)
        created = await service.create(user, data, key, current_request_id())
        return FastResponse(dumps(created.ticket), 201, headers=replayed if created.replayed else [])

    return [FastPost(prefix, create, max_body_bytes) for prefix in PREFIXES]


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


def build_router(
    prefix: str, *, max_upload_bytes: int, rate_limited: bool = True, include_in_schema: bool = True
) -> APIRouter:
    # Without a limit configured the limiter's dependency chain is not mounted at all (it would cost
    # every request a dependency pass for nothing).
    router = APIRouter(
        prefix=prefix,
        tags=["tickets"],
        dependencies=[Depends(_rate_limit)] if rate_limited else [],
        include_in_schema=include_in_schema,
    )
    _ticket_routes(router)
    _attachment_routes(router, max_upload_bytes)
    return router


def _ticket_routes(router: APIRouter) -> None:
    """A ticket created, listed, read, closed."""

    async def create(
        body: TicketCreate,
        caller: CallerDep,
        request: Request,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY_HEADER)
        ] = None,
    ) -> Response:
        created = await caller.service.create(caller.user, body, idempotency_key, _request_id(request))
        return _created_response(created)

    router.add_api_route(
        "",
        create,
        methods=["POST"],
        status_code=201,
        response_model=Ticket,
        summary="Create a ticket",
        description="With `Idempotency-Key`, a repeat with the same body answers the first response again "
        "(header `Idempotent-Replayed: true`); another body with the same key is 422; the same key while "
        "the first request is still running is 409.",
        responses={**COMMON, **error_responses(409, 413)},
    )

    @router.get("", response_model=list[Ticket], summary="List my tickets, newest first", responses=COMMON)
    async def list_tickets(
        caller: CallerDep,
        status: TicketStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> Response:
        page = await caller.service.list_tickets(caller.user, status, limit, offset)
        return Response(page.json, media_type=JSON)

    @router.get("/{ticket_id}", response_model=Ticket, summary="Get one of my tickets", responses=OWNED)
    async def get_ticket(ticket_id: str, caller: CallerDep) -> Response:
        return Response(dumps(await caller.service.get(caller.user, ticket_id)), media_type=JSON)

    @router.post(
        "/{ticket_id}/close",
        response_model=Ticket,
        summary="Close a ticket (closing a closed ticket is 200 again and emits no event)",
        responses=OWNED,
    )
    async def close(ticket_id: str, caller: CallerDep, request: Request) -> Response:
        return Response(
            dumps(await caller.service.close(caller.user, ticket_id, _request_id(request))), media_type=JSON
        )


def _attachment_routes(router: APIRouter, max_upload_bytes: int) -> None:
    """A file attached to a ticket, and the ticket's attachments with their download links."""

    @router.post(
        "/{ticket_id}/attachments",
        status_code=201,
        response_model=Attachment,
        summary="Attach a file (multipart field `file`) to an OPEN ticket",
        description="A CLOSED ticket takes no attachments (409), nor a ticket or user past its quota "
        "(409 `quota_exceeded`: ATTACHMENTS_PER_TICKET, ATTACHMENT_BYTES_PER_USER). The download link serves the file "
        "under its original name (`Content-Disposition: attachment; filename*=UTF-8''…`), with HEAD, "
        "`Range` and `ETag`.",
        responses={**OWNED, **error_responses(409, 413)},
        # The multipart envelope adds a little to the file itself.
        max_body_size=max_upload_bytes + 64 * 1024,
    )
    async def add_attachment(
        ticket_id: str, caller: CallerDep, file: Annotated[UploadFile, File()]
    ) -> Response:
        attachment = await caller.service.add_attachment(
            caller.user,
            ticket_id,
            (file.filename or "upload")[:255],
            file.content_type or "application/octet-stream",
            _chunks(file),
        )
        return Response(dumps(attachment), status_code=201, media_type=JSON)

    @router.get(
        "/{ticket_id}/attachments",
        response_model=list[Attachment],
        summary="List a ticket's attachments with expiring download links",
        responses=OWNED,
    )
    async def list_attachments(ticket_id: str, caller: CallerDep) -> Response:
        return Response(dumps(await caller.service.list_attachments(caller.user, ticket_id)), media_type=JSON)
