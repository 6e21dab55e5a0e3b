/**
 * The SDK from Node against a live node, over native gRPC (connect-node, HTTP/2 to the gRPC port)
 * and over Connect (the HTTP port): the story, and the errors a caller must tell apart by their code
 * and ErrorInfo reason.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  Code,
  LimitAction,
  SessionType,
  TerminationReason,
  errorCode,
  errorDetails,
  errorReason,
  isGatehouseError,
  terminationReason,
  type GatehouseClients,
} from "@gatehouse/sdk";
import { createNodeClients, type NodeProtocol } from "@gatehouse/sdk/node";

import { runStory } from "../examples/run-story.js";
import { liveNode, unique } from "./env.js";

const node = liveNode();
const timeout = 60_000;

/** clientsOver returns a factory of clients over protocol, to the port that protocol uses. */
function clientsOver(protocol: NodeProtocol): (token?: string) => GatehouseClients {
  const baseUrl = protocol === "grpc" ? node.grpcUrl : node.httpUrl;
  return (token) => createNodeClients({ baseUrl, protocol, token, defaultTimeoutMs: 30_000 });
}

/** expectFailure awaits p, which must fail, and returns its error. */
async function expectFailure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail("the call succeeded; want an error");
}

for (const protocol of ["grpc", "connect"] as const) {
  describe(`over ${protocol}`, () => {
    const clients = clientsOver(protocol);

    const login = (username: string, password: string) =>
      clients().session.createSession({
        credential: { case: "password", value: { username, password } },
        type: SessionType.WEB_BROWSER,
      });

    /** newUser creates a user as the administrator and returns its id, name and password. */
    const newUser = async (admin: GatehouseClients) => {
      const username = unique("sdk-ts");
      const password = `${username}-password`;
      const { user } = await admin.identity.createUser({ username, password });
      assert.ok(user);
      return { id: user.id, username, password };
    };

    const asAdmin = async () => clients((await login("admin", node.adminPassword)).token);

    test("the story: roles_changed with the granted role, then terminated", { timeout }, async () => {
      const r = await runStory({ clients, adminPassword: node.adminPassword });
      assert.deepEqual(r.validatedRoles, []);
      assert.deepEqual(r.snapshotRoles, []);
      assert.deepEqual(r.rolesChanged.added, [r.role]);
      assert.ok(r.rolesChanged.roles.includes(r.role), `roles ${r.rolesChanged.roles} lack ${r.role}`);
      assert.deepEqual(r.terminated, { reason: "TERMINATION_REASON_REVOKED_BY_ADMIN", note: "the story is over" });
      assert.equal(r.streamEnded, true);
      assert.deepEqual(r.validateAfterEnd, {
        code: "Unauthenticated",
        reason: "SESSION_TERMINATED",
        terminationReason: "TERMINATION_REASON_REVOKED_BY_ADMIN",
      });
    });

    test("invalid credentials: Unauthenticated, INVALID_CREDENTIALS", { timeout }, async () => {
      const admin = await asAdmin();
      const u = await newUser(admin);
      for (const [username, password] of [
        [u.username, "not-the-password"],
        [unique("nobody"), "whatever-password"],
      ] as const) {
        const err = await expectFailure(login(username, password));
        assert.equal(errorCode(err), Code.Unauthenticated);
        assert.equal(errorReason(err), "INVALID_CREDENTIALS");
        assert.ok(!isGatehouseError(err, Code.ResourceExhausted, "CONCURRENT_SESSION_LIMIT"));
      }
    });

    test("an ended session: SESSION_TERMINATED with the termination reason", { timeout }, async () => {
      const admin = await asAdmin();
      const u = await newUser(admin);
      const s = await login(u.username, u.password);
      const me = clients(s.token);
      await me.session.logout({});
      for (const call of [
        () => me.session.validateSession({ token: s.token }),
        () => me.session.getSession({ sessionId: s.session?.id ?? "" }),
      ]) {
        const err = await expectFailure(call());
        const d = errorDetails(err);
        assert.equal(d.code, Code.Unauthenticated);
        assert.equal(d.reason, "SESSION_TERMINATED");
        assert.equal(d.metadata["termination_reason"], "TERMINATION_REASON_LOGOUT");
        assert.equal(terminationReason(err), TerminationReason.LOGOUT);
      }
      const err = await expectFailure(me.session.validateSession({ token: "no-such-token" }));
      assert.equal(errorReason(err), "SESSION_NOT_FOUND");
      assert.equal(terminationReason(err), undefined);
    });

    test("a deny-new limit: ResourceExhausted, CONCURRENT_SESSION_LIMIT", { timeout }, async () => {
      const admin = await asAdmin();
      const u = await newUser(admin);
      await admin.policy.createSessionPolicy({
        policy: { scope: { kind: { case: "userId", value: u.id } }, maxSessions: 1, onLimit: LimitAction.DENY_NEW },
      });
      await login(u.username, u.password);
      const err = await expectFailure(login(u.username, u.password));
      assert.ok(isGatehouseError(err, Code.ResourceExhausted, "CONCURRENT_SESSION_LIMIT"), String(err));
      assert.notEqual(errorReason(err), "INVALID_CREDENTIALS");
    });

    test("invalid input: InvalidArgument with the field violations", { timeout }, async () => {
      const admin = await asAdmin();
      const err = await expectFailure(admin.identity.createUser({ username: "has spaces", password: "short" }));
      const d = errorDetails(err);
      assert.equal(d.code, Code.InvalidArgument);
      const fields = d.violations.map((v) => v.field).sort();
      assert.ok(fields.includes("username") && fields.includes("password"), `violations on ${fields}`);
    });
  });
}

test("the example program prints roles_changed, then terminated", { timeout }, async () => {
  const program = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "story.js");
  for (const protocol of ["grpc", "connect"]) {
    const child = spawn(process.execPath, [program], {
      env: {
        ...process.env,
        GATEHOUSE_PROTOCOL: protocol,
        GATEHOUSE_URL: node.httpUrl,
        GATEHOUSE_GRPC_URL: node.grpcUrl,
        GATEHOUSE_ADMIN_PASSWORD: node.adminPassword,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 0, `the example over ${protocol} failed:\n${out}`);
    const changed = out.indexOf("watch: roles_changed added=[story.reader-");
    const terminated = out.indexOf("watch: terminated reason=TERMINATION_REASON_REVOKED_BY_ADMIN");
    assert.ok(changed >= 0 && terminated > changed, `the example over ${protocol} printed:\n${out}`);
  }
});
