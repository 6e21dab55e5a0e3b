"""Schemathesis hooks of scripts/fuzz-rest.sh: keep the fuzzing administrator's session alive.

The run is authenticated as an administrator's session. Some calls, made with that user's own
ids, would end the session (TerminateUserSessions, TerminateSession, SetPassword, DeleteUser,
disabling the user), take its power away (RevokeRole of gatehouse.admin, a group membership that
changes its roles under a re-authenticate policy) or shorten its life (deleting or updating the
user-scoped policy that gives it long timeouts). Every later call would then be a meaningless 401.
Schemathesis finds these values on its own: its stateful phase infers links from responses (a
session's user_id, a policy's id) and feeds them to later calls.

So before every call that is not a GET, each string in the path, the query or the body that equals
one of the protected values (GATEHOUSE_FUZZ_PROTECT, comma-separated: the user id, the session id,
the token, the policy id, the username and gatehouse.admin; see session.py), compared
case-insensitively, is replaced with a harmless value of the same shape: a fresh UUID for a UUID,
else a fresh name. The request stays well-formed, so the checks still apply to it; it only names
something else. Logout, which needs no value to end the caller's session, is excluded from the run
instead (fuzz-rest.sh).
"""

import atexit
import os
import re
import uuid

import schemathesis

# Compared case-insensitively: usernames are, and the node lower-cases ids.
PROTECTED = frozenset(v.lower() for v in os.environ.get("GATEHOUSE_FUZZ_PROTECT", "").split(",") if v)
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# How many values the guard replaced, reported on exit.
replaced = 0


@atexit.register
def _report():
    if PROTECTED:
        print(f"fuzz-rest: the guard replaced {replaced} protected values in mutating calls")


def _harmless(value):
    global replaced
    replaced += 1
    if UUID.match(value):
        return str(uuid.uuid4())
    return "fuzz-guard-" + uuid.uuid4().hex[:8]


def _scrub(value):
    """Returns value with every protected string in it replaced (recursively in lists and dicts)."""
    if isinstance(value, str):
        return _harmless(value) if value.lower() in PROTECTED else value
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    if not PROTECTED or case.method.upper() == "GET":
        return
    for container in (case.path_parameters, case.query, case.body):
        if isinstance(container, dict):
            container.update(_scrub(container))
        elif isinstance(container, list):
            container[:] = _scrub(container)
    if isinstance(case.body, str) and case.body.lower() in PROTECTED:
        case.body = _harmless(case.body)


# How many ST201 failures filter_failure dropped as JSON nulls the node rightly took as defaults.
dropped_nulls = 0

_MISSING = object()


def _value_at(value, path):
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Drops one kind of failure: a JSON null in a body field, accepted.

    The negative phase sets a field to null ("violates `type` ... became null") and expects a
    refusal. But in the proto3 JSON mapping, which the REST facade speaks (docs/API.md), null is
    accepted for every field and means its default, and Swagger 2.0 has no way to say a field may be
    null. Every other failure is kept, and so is a case that mutated anything besides nulls.
    """
    global dropped_nulls
    if failure.code != "ST201":
        return True
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutations = getattr(data, "mutations", None)
    if not mutations:
        return True
    for m in mutations:
        if m.parameter_location.value != "body" or m.keywords != ("type",) or _value_at(case.body, m.path) is not None:
            return True
    dropped_nulls += 1
    return False


@atexit.register
def _report_nulls():
    if dropped_nulls:
        print(f"fuzz-rest: dropped {dropped_nulls} failures for a JSON null accepted as a field's default (proto3 JSON)")
