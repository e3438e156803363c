"""``/med/hl7``: ADT and ORM intake (answered with a real HL7 ACK), ORU send, message status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from starlette.responses import Response

from novaza_gateway.core.deps import ActorDep, SessionDep, TenantDep
from novaza_gateway.core.errors import ApiError, render
from novaza_gateway.core.policy import policy
from novaza_gateway.hl7 import metrics, service
from novaza_gateway.hl7.errors import Hl7ApplicationError, Hl7Rejected
from novaza_gateway.hl7.intake import ADT, ORDERS
from novaza_gateway.hl7.outcome import Outcome
from novaza_gateway.hl7.schemas import AckOut, MessageOut, QueuedOut, SendOruIn

MessageId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
router = APIRouter(prefix="/med/hl7", tags=["HL7 v2 messaging"])

MAX_MESSAGE_BYTES = 1024 * 1024
HL7_MEDIA_TYPE = "application/hl7-v2"
INTAKE = policy(
    "hl7:write",
    addon="hl7_fhir",
    max_body_bytes=MAX_MESSAGE_BYTES,
    errors={
        400: "HL7_REJECTED",
        409: "HL7_MESSAGE_IN_FLIGHT",
        413: "PAYLOAD_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
        422: "HL7_APPLICATION_ERROR, VALIDATION_FAILED",
    },
    responses={200: {"content": {HL7_MEDIA_TYPE: {}}, "model": AckOut}},
)
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            HL7_MEDIA_TYPE: {"schema": {"type": "string"}},
            "x-application/hl7-v2+er7": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": {"type": "string"}},
                }
            },
        },
    }
}


def _intake_route(summary: str) -> dict[str, Any]:
    extra = dict(INTAKE["openapi_extra"])
    extra.update(BODY)
    return {**INTAKE, "openapi_extra": extra, "summary": summary}


@router.post("/adt", **_intake_route("Receive an ADT message"))
async def receive_adt(request: Request, tenant: TenantDep, actor: ActorDep) -> Response:
    body = await request.body()
    area = request.app.state.hl7
    outcome = await service.receive(area, tenant, actor, body, _ctype(request), ADT)
    return answer(outcome, request)


@router.post("/orm", **_intake_route("Receive an ORM (or OMI) order message"))
async def receive_orm(request: Request, tenant: TenantDep, actor: ActorDep) -> Response:
    body = await request.body()
    area = request.app.state.hl7
    outcome = await service.receive(area, tenant, actor, body, _ctype(request), ORDERS)
    return answer(outcome, request)


def _ctype(request: Request) -> str:
    return request.headers.get("content-type", "text/plain")


def answer(outcome: Outcome, request: Request) -> Response:
    """AA: 200 with the ACK; AR: 400 HL7_REJECTED; AE: 422 HL7_APPLICATION_ERROR.

    Rendered, not raised: the outcome is already committed (an AE's message and ACK too).
    """
    metrics.count("http", outcome)
    bare = HL7_MEDIA_TYPE in request.headers.get("accept", "")
    headers = {"X-Hl7-Duplicate": "true"} if outcome.duplicate else {}
    error: ApiError | None = None
    if outcome.ack.code != "AA":
        details = {
            "ack": outcome.ack.text,
            "ackCode": outcome.ack.code,
            "hl7ErrorCode": outcome.error.code if outcome.error else None,
            "messageId": outcome.message_id,
        }
        text = outcome.error.text if outcome.error else None
        if outcome.ack.code == "AR":
            error = Hl7Rejected(text, details=details)
        else:
            error = Hl7ApplicationError(text, details=details)
    if bare:
        status = error.status if error else 200
        return Response(outcome.ack.data, status, headers, media_type=HL7_MEDIA_TYPE)
    if error is not None:
        response = render(error)
        response.headers.update(headers)
        return response
    out = AckOut(
        ack=outcome.ack.text,
        ack_code=outcome.ack.code,
        control_id=outcome.header.control_id if outcome.header else "",
        message_id=outcome.message_id,
        duplicate=outcome.duplicate,
    )
    return Response(out.model_dump_json(by_alias=True), 200, headers, media_type="application/json")


SEND = policy(
    "hl7:write",
    addon="hl7_fhir",
    max_body_bytes=2 * MAX_MESSAGE_BYTES,
    errors={
        404: "NOT_FOUND",
        409: "CONFLICT",
        422: "VALIDATION_FAILED, HL7_DESTINATION_UNKNOWN",
    },
)
READ = policy("hl7:write", addon="hl7_fhir", errors={404: "NOT_FOUND", 409: "CONFLICT"})


@router.post(
    "/send-oru",
    **SEND,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue an ORU^R01 for delivery over MLLP",
)
async def send_oru(
    body: SendOruIn, request: Request, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> QueuedOut:
    return await service.send_oru(session, request.app.state.hl7, tenant, actor, body)


@router.get("/messages/{message_id}", **READ, summary="A message's status and delivery attempts")
async def get_message(message_id: MessageId, session: SessionDep, tenant: TenantDep) -> MessageOut:
    return await service.get_message(session, tenant, message_id)


@router.post("/messages/{message_id}/requeue", **READ, summary="Send a dead-lettered ORU again")
async def requeue(
    message_id: MessageId, request: Request, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> MessageOut:
    return await service.requeue(session, request.app.state.hl7, tenant, actor, message_id)


@router.post(
    "/messages/{message_id}/reprocess",
    **READ,
    summary="Process a failed inbound message again (for the tenant's current settings)",
)
async def reprocess(
    message_id: MessageId, request: Request, session: SessionDep, tenant: TenantDep, actor: ActorDep
) -> MessageOut:
    return await service.reprocess(session, request.app.state.hl7, tenant, actor, message_id)
