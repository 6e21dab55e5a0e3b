"""Gatehouse's story in Python: a session watches itself while an administrator changes it.

The administrator logs in, creates a user and a role; the user logs in and opens WatchSession; the
administrator grants the role (the stream says `roles_changed`) and then ends the session (the
stream says `terminated` and ends). Last, validating the ended session's token fails with
UNAUTHENTICATED / SESSION_TERMINATED and the termination reason, read through GatehouseError.

    GATEHOUSE_ADMIN_PASSWORD=... python examples/story.py --target localhost:9090

The target, administrator and password come from the flags or from GATEHOUSE_GRPC_TARGET,
GATEHOUSE_ADMIN_USERNAME and GATEHOUSE_ADMIN_PASSWORD. Each run makes a user and a role with new
names, so it can run again against the same node.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterator, Sequence

import grpc

import gatehouse
from gatehouse.v1 import common_pb2, identity_pb2, session_pb2

# Every unary call's deadline, in seconds.
CALL_TIMEOUT = 10.0
# The watch stream's deadline: the whole story must fit in it. (Nothing here sleeps: each step
# blocks on the stream's next message, and the deadline bounds the wait.)
WATCH_TIMEOUT = 60.0


def login(client: gatehouse.Client, username: str, password: str) -> session_pb2.CreateSessionResponse:
    """Logs username in with a web-browser session."""
    return client.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            password=session_pb2.PasswordCredential(username=username, password=password),
            type=common_pb2.SESSION_TYPE_WEB_BROWSER,
        ),
        timeout=CALL_TIMEOUT,
    )


def next_event(stream: Iterator[session_pb2.WatchSessionResponse]) -> session_pb2.WatchSessionResponse:
    """Returns the stream's next message other than a heartbeat."""
    for message in stream:
        if message.WhichOneof("event") != "heartbeat":
            return message
    raise RuntimeError("the watch stream ended early")


def story(target: str, admin_username: str, admin_password: str) -> None:
    """Runs the story against the node at target, printing one line per step."""
    suffix = secrets.token_hex(4)
    username, password, role = f"story-{suffix}", secrets.token_urlsafe(18), f"story_reader_{suffix}"

    with gatehouse.connect(target) as anonymous:
        admin = anonymous.with_token(login(anonymous, admin_username, admin_password).token)
        user = admin.identity.CreateUser(
            identity_pb2.CreateUserRequest(username=username, password=password), timeout=CALL_TIMEOUT
        ).user
        admin.identity.CreateRole(
            identity_pb2.CreateRoleRequest(name=role, description="granted by the Python story"),
            timeout=CALL_TIMEOUT,
        )
        print(f"created user={username} role={role}")

        session = login(anonymous, username, password)
        me = anonymous.with_token(session.token)
        stream = me.sessions.WatchSession(session_pb2.WatchSessionRequest(), timeout=WATCH_TIMEOUT)
        try:
            # The snapshot comes first: once it is here, every later change reaches this stream.
            snapshot = next_event(stream).snapshot
            print(f"snapshot session={snapshot.session.id} roles={list(snapshot.roles)}")

            admin.identity.GrantRole(identity_pb2.GrantRoleRequest(role=role, user_id=user.id), timeout=CALL_TIMEOUT)
            changed = next_event(stream)
            if changed.WhichOneof("event") != "roles_changed":
                raise RuntimeError(f"expected roles_changed, got {changed}")
            print(f"roles_changed added={list(changed.roles_changed.added)} roles={list(changed.roles_changed.roles)}")

            admin.sessions.TerminateSession(
                session_pb2.TerminateSessionRequest(session_id=session.session.id, note="the story is over"),
                timeout=CALL_TIMEOUT,
            )
            ended = next_event(stream)
            if ended.WhichOneof("event") != "terminated":
                raise RuntimeError(f"expected terminated, got {ended}")
            reason = common_pb2.TerminationReason.Name(ended.terminated.reason)
            print(f"terminated reason={reason} note={ended.terminated.note!r}")
        finally:
            stream.cancel()

        try:
            anonymous.sessions.ValidateSession(
                session_pb2.ValidateSessionRequest(token=session.token), timeout=CALL_TIMEOUT
            )
            raise RuntimeError("the ended session still validates")
        except grpc.RpcError as err:
            e = gatehouse.GatehouseError.from_rpc_error(err)
            why = common_pb2.TerminationReason.Name(e.termination_reason or common_pb2.TERMINATION_REASON_UNSPECIFIED)
            print(f"validate code={e.code.name} reason={e.reason} termination_reason={why}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags and runs the story; a failed call prints its code and reason."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", default=os.environ.get("GATEHOUSE_GRPC_TARGET", "localhost:9090"),
                        help="the node's gRPC address (GATEHOUSE_GRPC_TARGET; default localhost:9090)")
    parser.add_argument("--admin-username", default=os.environ.get("GATEHOUSE_ADMIN_USERNAME", "admin"),
                        help="the administrator's username (GATEHOUSE_ADMIN_USERNAME; default admin)")
    parser.add_argument("--admin-password", default=os.environ.get("GATEHOUSE_ADMIN_PASSWORD"),
                        help="the administrator's password (better: GATEHOUSE_ADMIN_PASSWORD, out of the process list)")
    args = parser.parse_args(argv)
    if not args.admin_password:
        parser.error("set GATEHOUSE_ADMIN_PASSWORD or --admin-password")
    try:
        story(args.target, args.admin_username, args.admin_password)
    except grpc.RpcError as err:
        print(f"story: {gatehouse.GatehouseError.from_rpc_error(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
