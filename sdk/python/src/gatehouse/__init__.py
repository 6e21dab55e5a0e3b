"""Gatehouse's Python SDK.

The generated code is in gatehouse.v1: messages in `*_pb2` (common_pb2, identity_pb2, session_pb2,
policy_pb2, event_pb2) and gRPC stubs in `*_pb2_grpc`. This package adds what the generated code
leaves awkward: connect() opens a channel and carries a session's bearer token, and GatehouseError
reads a failure's status code, ErrorInfo reason and metadata.

    import gatehouse
    from gatehouse.v1 import session_pb2, common_pb2

    with gatehouse.connect("localhost:9090") as anonymous:
        login = anonymous.sessions.CreateSession(session_pb2.CreateSessionRequest(
            password=session_pb2.PasswordCredential(username="alice", password="..."),
            type=common_pb2.SESSION_TYPE_WEB_BROWSER))
        alice = anonymous.with_token(login.token)
        alice.sessions.ListSessions(session_pb2.ListSessionsRequest())
"""

from gatehouse.client import Client, connect
from gatehouse.errors import GatehouseError, translate_errors

__all__ = ["Client", "GatehouseError", "connect", "translate_errors"]
