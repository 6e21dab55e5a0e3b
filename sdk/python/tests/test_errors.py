"""GatehouseError against an in-process gRPC server that fails calls with chosen trailers.

These need no Gatehouse node: they pin down how the SDK reads statuses, garbled ones included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import gatehouse
from gatehouse.errors import STATUS_DETAILS_KEY
from gatehouse.v1 import common_pb2

# A fake method of the in-process server: it fails with the code, message and trailers that the
# test put in the request's place.
_METHOD = "/test.Failing/Fail"

Failure = tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]


@pytest.fixture
def fail() -> Iterator[Callable[[Failure], grpc.RpcError]]:
    """Returns a function that makes one call fail as told and returns what the client raised."""
    pending: list[Failure] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        code, message, trailers = pending.pop()
        context.set_trailing_metadata(trailers)
        context.abort(code, message)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(handle)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Failing", {"Fail": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_METHOD)

    def run(failure: Failure) -> grpc.RpcError:
        pending.append(failure)
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", timeout=10)
        return raised.value

    yield run
    channel.close()
    server.stop(None)


def packed(*details: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> list[any_pb2.Any]:
    """Packs details into Anys."""
    out = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        out.append(a)
    return out


def status_trailer(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> tuple[str, bytes]:
    """Returns the grpc-status-details-bin trailer of a google.rpc.Status."""
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return (STATUS_DETAILS_KEY, status.SerializeToString())


def test_error_info(fail: Callable[[Failure], grpc.RpcError]) -> None:
    """The ErrorInfo's reason, domain and metadata, and the termination reason as an enum value."""
    info = error_details_pb2.ErrorInfo(
        reason="SESSION_TERMINATED",
        domain="gatehouse",
        metadata={"termination_reason": "TERMINATION_REASON_IDLE_TIMEOUT"},
    )
    code = grpc.StatusCode.UNAUTHENTICATED
    err = gatehouse.GatehouseError.from_rpc_error(fail((code, "ended", (status_trailer(code, "ended", packed(info)),))))
    assert (err.code, err.message, err.reason, err.domain) == (code, "ended", "SESSION_TERMINATED", "gatehouse")
    assert err.metadata == {"termination_reason": "TERMINATION_REASON_IDLE_TIMEOUT"}
    assert err.termination_reason == common_pb2.TERMINATION_REASON_IDLE_TIMEOUT
    assert len(err.details) == 1
    assert str(err) == "UNAUTHENTICATED (SESSION_TERMINATED): ended"


def test_bad_request(fail: Callable[[Failure], grpc.RpcError]) -> None:
    """BadRequest field violations, beside an ErrorInfo."""
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="username", description="too long")]
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_INPUT")
    code = grpc.StatusCode.INVALID_ARGUMENT
    err = gatehouse.GatehouseError.from_rpc_error(fail((code, "bad", (status_trailer(code, "bad", packed(bad, info)),))))
    assert err.reason == "INVALID_INPUT"
    assert [(v.field, v.description) for v in err.field_violations] == [("username", "too long")]


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param((), id="no details"),
        pytest.param(((STATUS_DETAILS_KEY, b"\xff\xff not a status"),), id="garbled details"),
        pytest.param(
            (status_trailer(grpc.StatusCode.NOT_FOUND, "other", packed(error_details_pb2.ErrorInfo(reason="OTHER"))),),
            id="details of another code",
        ),
    ],
)
def test_without_usable_details(fail: Callable[[Failure], grpc.RpcError], trailers: tuple[tuple[str, bytes], ...]) -> None:
    """Without usable details the code and message remain, and the reason is empty."""
    code = grpc.StatusCode.UNAVAILABLE
    err = gatehouse.GatehouseError.from_rpc_error(fail((code, "down", trailers)))
    assert (err.code, err.message, err.reason, dict(err.metadata)) == (code, "down", "", {})
    assert err.termination_reason is None


def test_unknown_termination_reason() -> None:
    """A termination reason newer than the SDK reads as UNSPECIFIED rather than failing."""
    err = gatehouse.GatehouseError(
        grpc.StatusCode.UNAUTHENTICATED,
        "ended",
        reason="SESSION_TERMINATED",
        metadata={"termination_reason": "TERMINATION_REASON_FROM_THE_FUTURE"},
    )
    assert err.termination_reason == common_pb2.TERMINATION_REASON_UNSPECIFIED


def test_translate_errors_chains(fail: Callable[[Failure], grpc.RpcError]) -> None:
    """translate_errors raises a GatehouseError whose cause is the original RpcError."""
    original = fail((grpc.StatusCode.PERMISSION_DENIED, "no", ()))
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        raise original
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.__cause__ is original
