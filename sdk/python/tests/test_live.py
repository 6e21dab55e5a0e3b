"""The SDK against a live node over gRPC: the watch story, and errors told apart by code and reason.

No test sleeps: each waits on the stream's next message under the call's deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from conftest import CALL_TIMEOUT, User, fresh_name, login

import gatehouse
from gatehouse.v1 import common_pb2, identity_pb2, policy_pb2, session_pb2

# The watch stream's deadline in the tests: the story must fit in it.
WATCH_TIMEOUT = 30.0


def next_event(stream: Iterator[session_pb2.WatchSessionResponse]) -> session_pb2.WatchSessionResponse:
    """Returns the stream's next message other than a heartbeat."""
    for message in stream:
        if message.WhichOneof("event") != "heartbeat":
            return message
    raise AssertionError("the watch stream ended early")


def test_watch_story(client: gatehouse.Client, admin: gatehouse.Client, user: User) -> None:
    """A watched session hears roles_changed on a grant, then terminated, then its stream ends OK."""
    role = fresh_name("py_role")
    admin.identity.CreateRole(identity_pb2.CreateRoleRequest(name=role), timeout=CALL_TIMEOUT)
    session = login(client, user.username, user.password)
    me = client.with_token(session.token)

    stream = me.sessions.WatchSession(session_pb2.WatchSessionRequest(), timeout=WATCH_TIMEOUT)
    try:
        first = next_event(stream)
        assert first.WhichOneof("event") == "snapshot"
        assert first.snapshot.session.id == session.session.id
        assert role not in first.snapshot.roles

        admin.identity.GrantRole(identity_pb2.GrantRoleRequest(role=role, user_id=user.id), timeout=CALL_TIMEOUT)
        changed = next_event(stream)
        assert changed.WhichOneof("event") == "roles_changed"
        assert list(changed.roles_changed.added) == [role]
        assert role in changed.roles_changed.roles

        admin.sessions.TerminateSession(
            session_pb2.TerminateSessionRequest(session_id=session.session.id, note="py test"), timeout=CALL_TIMEOUT
        )
        ended = next_event(stream)
        assert ended.WhichOneof("event") == "terminated"
        assert ended.terminated.reason == common_pb2.TERMINATION_REASON_REVOKED_BY_ADMIN
        assert ended.terminated.note == "py test"

        # After terminated the server ends the stream with OK.
        assert list(stream) == []
        assert stream.code() == grpc.StatusCode.OK
    finally:
        stream.cancel()


def test_invalid_credentials(client: gatehouse.Client, user: User) -> None:
    """A wrong password is UNAUTHENTICATED / INVALID_CREDENTIALS, with no limit's reason."""
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        login(client, user.username, user.password + "-wrong")
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == "INVALID_CREDENTIALS"
    assert raised.value.termination_reason is None


def test_deny_new_limit(client: gatehouse.Client, admin: gatehouse.Client, user: User) -> None:
    """Under a deny-new limit of one, a second login is RESOURCE_EXHAUSTED / CONCURRENT_SESSION_LIMIT."""
    admin.policies.CreateSessionPolicy(
        policy_pb2.CreateSessionPolicyRequest(
            policy=common_pb2.SessionPolicy(
                scope=common_pb2.PolicyScope(user_id=user.id),
                max_sessions=1,
                on_limit=common_pb2.LIMIT_ACTION_DENY_NEW,
            )
        ),
        timeout=CALL_TIMEOUT,
    )
    login(client, user.username, user.password)
    with pytest.raises(grpc.RpcError) as raised:
        login(client, user.username, user.password)
    err = gatehouse.GatehouseError.from_rpc_error(raised.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "CONCURRENT_SESSION_LIMIT"


@pytest.mark.parametrize(
    ("end", "want"),
    [
        ("logout", common_pb2.TERMINATION_REASON_LOGOUT),
        ("admin", common_pb2.TERMINATION_REASON_REVOKED_BY_ADMIN),
    ],
)
def test_validate_terminated_session(
    client: gatehouse.Client,
    admin: gatehouse.Client,
    user: User,
    end: str,
    want: common_pb2.TerminationReason.ValueType,
) -> None:
    """Validating an ended session is UNAUTHENTICATED / SESSION_TERMINATED with the reason in metadata."""
    session = login(client, user.username, user.password)
    if end == "logout":
        client.with_token(session.token).sessions.Logout(session_pb2.LogoutRequest(), timeout=CALL_TIMEOUT)
    else:
        admin.sessions.TerminateSession(
            session_pb2.TerminateSessionRequest(session_id=session.session.id), timeout=CALL_TIMEOUT
        )
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        client.sessions.ValidateSession(session_pb2.ValidateSessionRequest(token=session.token), timeout=CALL_TIMEOUT)
    err = raised.value
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    assert err.reason == "SESSION_TERMINATED"
    assert err.metadata["termination_reason"] == common_pb2.TerminationReason.Name(want)
    assert err.termination_reason == want


def test_watch_ended_session(client: gatehouse.Client, user: User) -> None:
    """Watching an ended session fails as validating it does; the error comes out of the iteration."""
    session = login(client, user.username, user.password)
    me = client.with_token(session.token)
    me.sessions.Logout(session_pb2.LogoutRequest(), timeout=CALL_TIMEOUT)
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        next_event(me.sessions.WatchSession(session_pb2.WatchSessionRequest(), timeout=WATCH_TIMEOUT))
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == "SESSION_TERMINATED"
    assert raised.value.termination_reason == common_pb2.TERMINATION_REASON_LOGOUT


def test_unknown_token(client: gatehouse.Client) -> None:
    """An unknown token is UNAUTHENTICATED / SESSION_NOT_FOUND, with no termination reason."""
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        client.sessions.ValidateSession(session_pb2.ValidateSessionRequest(token="not-a-token"), timeout=CALL_TIMEOUT)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == "SESSION_NOT_FOUND"
    assert raised.value.termination_reason is None


def test_no_token(client: gatehouse.Client) -> None:
    """A call that needs a session, made without a token, is UNAUTHENTICATED."""
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_invalid_argument(admin: gatehouse.Client) -> None:
    """Invalid input is INVALID_ARGUMENT with the offending field among the field violations."""
    with pytest.raises(gatehouse.GatehouseError) as raised, gatehouse.translate_errors():
        admin.identity.CreateUser(identity_pb2.CreateUserRequest(username="no spaces allowed"), timeout=CALL_TIMEOUT)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "username" in [v.field for v in raised.value.field_violations]


def test_call_authorization_wins(client: gatehouse.Client, admin: gatehouse.Client, user: User) -> None:
    """An authorization passed to one call replaces the client's token for that call only."""
    me = client.with_token(login(client, user.username, user.password).token)
    admin_token = admin.token
    assert admin_token is not None
    as_admin = me.sessions.ListSessions(
        session_pb2.ListSessionsRequest(), metadata=(("authorization", "Bearer " + admin_token),), timeout=CALL_TIMEOUT
    )
    as_me = me.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT)
    assert as_admin.sessions and user.id not in {s.user_id for s in as_admin.sessions}
    assert {s.user_id for s in as_me.sessions} == {user.id}
