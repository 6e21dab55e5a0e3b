"""The example program, run as a user would run it, against the live node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import Node

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "story.py"


def test_story_example(node: Node) -> None:
    """story.py prints roles_changed with the granted role, then terminated, then the failed validation."""
    env = dict(os.environ, GATEHOUSE_GRPC_TARGET=node.target, GATEHOUSE_ADMIN_USERNAME=node.admin_username,
               GATEHOUSE_ADMIN_PASSWORD=node.admin_password)
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"story.py failed:\n{done.stdout}\n{done.stderr}"

    lines = done.stdout.splitlines()
    steps = [line.split(" ", 1)[0] for line in lines]
    assert steps == ["created", "snapshot", "roles_changed", "terminated", "validate"], done.stdout
    role = lines[0].split("role=", 1)[1]
    assert f"added=['{role}']" in lines[2]
    assert "reason=TERMINATION_REASON_REVOKED_BY_ADMIN" in lines[3]
    assert lines[4] == (
        "validate code=UNAUTHENTICATED reason=SESSION_TERMINATED termination_reason=TERMINATION_REASON_REVOKED_BY_ADMIN"
    )
