"""Fixtures for the tests against a live Gatehouse node.

The node is the one at GATEHOUSE_GRPC_TARGET, whose administrator is GATEHOUSE_ADMIN_USERNAME
(default admin) with GATEHOUSE_ADMIN_PASSWORD. `scripts/sdk-python.sh test` starts one (through
the Go test TestSDKPython) and sets them. The tests share the node, so each makes its own users
and roles with fresh names.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import gatehouse
from gatehouse.v1 import common_pb2, identity_pb2, session_pb2

# Every unary call's deadline, in seconds.
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Node:
    """Where the live node is and how to call it as its administrator."""

    target: str
    admin_username: str
    admin_password: str


@dataclass(frozen=True)
class User:
    """A user made for one test."""

    id: str
    username: str
    password: str


def fresh_name(prefix: str) -> str:
    """Returns prefix with a random suffix: a username or role name no other test uses."""
    return f"{prefix}_{secrets.token_hex(5)}"


def login(
    client: gatehouse.Client, username: str, password: str
) -> session_pb2.CreateSessionResponse:
    """Logs username in with a web-browser session."""
    return client.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            password=session_pb2.PasswordCredential(username=username, password=password),
            type=common_pb2.SESSION_TYPE_WEB_BROWSER,
        ),
        timeout=CALL_TIMEOUT,
    )


@pytest.fixture(scope="session")
def node() -> Node:
    """The live node of the environment; fails (never skips) when it is not given."""
    target = os.environ.get("GATEHOUSE_GRPC_TARGET", "")
    password = os.environ.get("GATEHOUSE_ADMIN_PASSWORD", "")
    if not target or not password:
        pytest.fail(
            "the live tests need GATEHOUSE_GRPC_TARGET and GATEHOUSE_ADMIN_PASSWORD; "
            "scripts/sdk-python.sh test starts a node and sets them"
        )
    return Node(target, os.environ.get("GATEHOUSE_ADMIN_USERNAME", "admin"), password)


@pytest.fixture
def client(node: Node) -> Iterator[gatehouse.Client]:
    """An anonymous client of the node; its channel closes after the test."""
    with gatehouse.connect(node.target) as c:
        yield c


@pytest.fixture
def admin(client: gatehouse.Client, node: Node) -> gatehouse.Client:
    """A client calling as a fresh session of the administrator."""
    return client.with_token(login(client, node.admin_username, node.admin_password).token)


@pytest.fixture
def user(admin: gatehouse.Client) -> User:
    """A new user with a password."""
    username, password = fresh_name("py-user"), secrets.token_urlsafe(18)
    created = admin.identity.CreateUser(
        identity_pb2.CreateUserRequest(username=username, password=password), timeout=CALL_TIMEOUT
    )
    return User(created.user.id, username, password)
