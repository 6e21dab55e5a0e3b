"""The fuzzing administrator's session, for scripts/fuzz-rest.sh (standard library only).

  session.py setup URL USERNAME   (the password on standard input) prints shell assignments:
      FUZZ_TOKEN, FUZZ_USER_ID, FUZZ_SESSION_ID, FUZZ_POLICY_ID and GATEHOUSE_FUZZ_PROTECT
  session.py check URL TOKEN      fails unless the session is still active

setup logs the administrator in with a non-interactive session and gives its user a user-scoped
session policy with year-long timeouts and the refresh role-change action: a user's own policy
decides those fields before any role or global policy does (ARCHITECTURE.md section 8), so no
policy the fuzzer creates can expire the session or end it on a role change. GATEHOUSE_FUZZ_PROTECT
lists the values the hooks (hooks.py) keep out of the fuzzer's mutating calls.
"""

import json
import shlex
import sys
import urllib.error
import urllib.request

YEAR = "31536000s"


def call(url, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"message": text}


def must(result, what):
    status, body = result
    if status != 200:
        sys.exit(f"fuzz-rest: {what}: HTTP {status}: {json.dumps(body)}")
    return body


def setup(url, username):
    password = sys.stdin.readline().rstrip("\n")
    login = must(call(url, "POST", "/v1/sessions", {
        "password": {"username": username, "password": password},
        "type": "SESSION_TYPE_NON_INTERACTIVE",
        "client": {"deviceName": "fuzz-rest"},
    }), f"logging in as {username}")
    token, user_id, session_id = login["token"], login["user"]["id"], login["session"]["id"]
    if "gatehouse.admin" not in login.get("roles", []):
        sys.exit(f"fuzz-rest: {username} does not hold gatehouse.admin (roles: {login.get('roles')})")

    policy = {"idleTimeout": YEAR, "absoluteTimeout": YEAR, "onRoleChange": "ROLE_CHANGE_ACTION_REFRESH"}
    status, body = call(url, "POST", "/v1/policies", dict(policy, scope={"userId": user_id}), token)
    if status == 409:
        # A policy for this user exists (an earlier run on the same node): make it ours.
        policies = must(call(url, "GET", "/v1/policies?pageSize=1000", token=token), "listing policies")
        existing = [p for p in policies.get("policies", []) if p.get("scope", {}).get("userId") == user_id]
        if not existing:
            sys.exit(f"fuzz-rest: creating the administrator's policy: HTTP 409 but no policy has its scope: {json.dumps(body)}")
        policy_id = existing[0]["id"]
        must(call(url, "PATCH", f"/v1/policies/{policy_id}", policy, token), "updating the administrator's policy")
    elif status == 200:
        policy_id = body["policy"]["id"]
    else:
        sys.exit(f"fuzz-rest: creating the administrator's policy: HTTP {status}: {json.dumps(body)}")

    protect = ",".join([user_id, session_id, token, policy_id, username, "gatehouse.admin"])
    for name, value in [("FUZZ_TOKEN", token), ("FUZZ_USER_ID", user_id), ("FUZZ_SESSION_ID", session_id),
                        ("FUZZ_POLICY_ID", policy_id), ("GATEHOUSE_FUZZ_PROTECT", protect)]:
        print(f"{name}={shlex.quote(value)}")


def check(url, token):
    status, body = call(url, "POST", "/v1/sessions:validate", {"token": token})
    if status != 200 or not body.get("session", {}).get("active"):
        sys.exit("fuzz-rest: the fuzzing administrator's session did not survive the run, so the calls "
                 f"after it ended were meaningless 401s (fix the guard in scripts/fuzz/hooks.py): HTTP {status}: "
                 + json.dumps(body))
    print("fuzz-rest: the fuzzing administrator's session is still active")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "setup":
        setup(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
