"""Gatehouse's errors as values: the status code and the google.rpc details of a failed call.

Gatehouse answers every failure with a gRPC status code and, in the `grpc-status-details-bin`
trailer, a google.rpc.Status whose details hold a google.rpc.ErrorInfo (a stable, machine-readable
`reason` and its `metadata`) or, for invalid input, a google.rpc.BadRequest (field violations).
grpcio hands the trailer over as bytes; GatehouseError decodes it once, so that callers branch on
`code` and `reason` instead of parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from gatehouse.v1 import common_pb2

# The trailer in which gRPC servers send the google.rpc.Status with the details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# The ErrorInfo metadata key under which an ended session's TerminationReason name comes.
TERMINATION_REASON_KEY = "termination_reason"


class GatehouseError(Exception):
    """A failed Gatehouse call.

    Attributes:
        code: the gRPC status code, e.g. grpc.StatusCode.UNAUTHENTICATED.
        message: the status message, for people (never parse it).
        reason: the ErrorInfo reason, e.g. "CONCURRENT_SESSION_LIMIT" or "SESSION_TERMINATED";
            empty when the status carries no ErrorInfo (such as an invalid argument, which carries
            field violations instead, or a failure of the transport itself).
        domain: the ErrorInfo domain.
        metadata: the ErrorInfo metadata, e.g. {"termination_reason": "TERMINATION_REASON_LOGOUT"}.
        field_violations: the BadRequest field violations of an invalid argument.
        details: every detail of the status, packed, including any of other types.
    """

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: Mapping[str, str]
    field_violations: tuple[error_details_pb2.BadRequest.FieldViolation, ...]
    details: tuple[any_pb2.Any, ...]

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[error_details_pb2.BadRequest.FieldViolation, ...] = (),
        details: tuple[any_pb2.Any, ...] = (),
    ) -> None:
        """Makes an error from its parts; from_rpc_error makes one from a failed call."""
        super().__init__(code, message, reason)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = field_violations
        self.details = details

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> GatehouseError:
        """Decodes the status of a failed call (what a stub raised, or a stream's call object)."""
        # grpcio's RpcErrors of failed calls are also grpc.Call; a bare one comes from a failure
        # outside any call. (The cast: types-grpcio declares RpcError with Call's methods.)
        if not isinstance(cast(object, err), grpc.Call):
            return cls(grpc.StatusCode.UNKNOWN, str(err))
        code, message = err.code(), err.details() or ""
        status = None
        for trailer in err.trailing_metadata() or ():
            if trailer.key == STATUS_DETAILS_KEY:
                status = _status(trailer.value)
        # A status whose code disagrees with the call's did not come from the server that failed
        # the call (a proxy may have replaced the status); its details would describe another error.
        if status is None or status.code != code.value[0]:
            return cls(code, message)
        reason, domain, metadata = "", "", {}
        violations: list[error_details_pb2.BadRequest.FieldViolation] = []
        for detail in status.details:
            # Unpack only fills a message of the detail's own type, and says whether it did.
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Unpack(bad):
                violations.extend(bad.field_violations)
        return cls(
            code,
            message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=tuple(violations),
            details=tuple(status.details),
        )

    @property
    def termination_reason(self) -> common_pb2.TerminationReason.ValueType | None:
        """Why the session ended, for SESSION_TERMINATED errors; None when the error says nothing.

        A reason newer than this SDK reads as TERMINATION_REASON_UNSPECIFIED.
        """
        name = self.metadata.get(TERMINATION_REASON_KEY)
        if name is None:
            return None
        try:
            return common_pb2.TerminationReason.Value(name)
        except ValueError:
            return common_pb2.TERMINATION_REASON_UNSPECIFIED

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


def _status(value: str | bytes) -> status_pb2.Status | None:
    """Decodes a grpc-status-details-bin trailer; None if it is garbled."""
    if not isinstance(value, bytes):
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(value)
    except DecodeError:
        return None
    return status


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raises a grpc.RpcError from the block as a GatehouseError (chained to the original).

    Handy around a stream, whose failure comes out of the iteration:

        with gatehouse.translate_errors():
            for message in client.sessions.WatchSession(WatchSessionRequest(), timeout=60):
                ...
    """
    try:
        yield
    except grpc.RpcError as err:
        raise GatehouseError.from_rpc_error(err) from err
