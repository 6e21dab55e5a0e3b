"""The client factory: one gRPC channel, the bearer token, and Gatehouse's three service stubs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc

from gatehouse.v1 import identity_pb2_grpc, policy_pb2_grpc, session_pb2_grpc

if TYPE_CHECKING:
    # Only in types-grpcio's stubs: the objects a call returns, both a Call and a Future or iterator.
    from grpc import _CallFuture, _CallIterator

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _CallDetails(grpc.ClientCallDetails):
    """A copy of a call's details with other metadata (grpc.ClientCallDetails has no constructor)."""

    def __init__(self, details: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        # Older grpcio versions' details lack these two; getattr keeps the copy working there.
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call that has no authorization of its own.

    NOTE: an interceptor rather than grpc.access_token_call_credentials, because gRPC refuses call
    credentials on a plaintext channel, and a node in development or a test listens without TLS.
    The token then travels in the clear: give connect() TLS credentials in production.
    """

    def __init__(self, token: str) -> None:
        self._header = ("authorization", "Bearer " + token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = tuple(details.metadata or ())
        # A call that brings its own authorization (metadata=...) keeps it: the more specific wins,
        # and a request with two authorization headers would be ambiguous.
        if any(key.lower() == "authorization" for key, _ in metadata):
            return details
        return _CallDetails(details, (*metadata, self._header))

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], _CallFuture[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> _CallFuture[_Response]:
        """Calls on with the token added."""
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], _CallIterator[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> _CallIterator[_Response]:
        """Calls on with the token added."""
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], _CallFuture[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> _CallFuture[_Response]:
        """Calls on with the token added."""
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], _CallIterator[_Response]],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[_Request],
    ) -> _CallIterator[_Response]:
        """Calls on with the token added."""
        return continuation(self._details(client_call_details), request_iterator)


class Client:
    """Gatehouse's services over one gRPC channel, calling anonymously or as one session.

    `identity`, `sessions` and `policies` are the generated stubs: each RPC is a method taking the
    request message and the usual grpc keywords (`timeout`, `metadata`, `wait_for_ready`), and a
    failed call raises grpc.RpcError (see gatehouse.GatehouseError to read its code and reason).
    Clients made by with_token share the channel of the client they came from; closing any of them
    closes the channel for all.
    """

    identity: identity_pb2_grpc.IdentityServiceStub
    sessions: session_pb2_grpc.SessionServiceStub
    policies: policy_pb2_grpc.PolicyServiceStub

    def __init__(self, channel: grpc.Channel, token: str | None = None) -> None:
        """Wraps channel; with a token every call carries it as `authorization: Bearer <token>`."""
        self._base = channel
        self.token = token
        self.channel = grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.policies = policy_pb2_grpc.PolicyServiceStub(self.channel)

    def with_token(self, token: str) -> Client:
        """Returns a client on the same channel that calls as the session holding token."""
        return Client(self._base, token)

    def close(self) -> None:
        """Closes the channel, ending its calls (streams included)."""
        self._base.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(
    target: str,
    token: str | None = None,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> Client:
    """Opens a channel to a node's gRPC port (`host:port` or any gRPC target) and returns a Client.

    Without credentials the channel is plaintext, as a node without --tls-cert serves; pass
    grpc.ssl_channel_credentials() (or your own) for a node with TLS. options are grpc channel
    options. The channel connects lazily, on the first call.
    """
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return Client(channel, token)
