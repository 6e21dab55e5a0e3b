/**
 * The Gatehouse story, written once against the SDK's clients so that it runs unchanged in Node
 * (gRPC, Connect) and in a browser (Connect, gRPC-Web): an administrator creates a user and a role;
 * the user logs in, validates the session and watches it; the administrator grants the role (the
 * watch says roles_changed) and then ends the session (the watch says terminated, and a validation
 * of the ended session fails with its termination reason).
 *
 * @module
 */
import {
  Code,
  SessionType,
  errorDetails,
  terminationReason,
  terminationReasonName,
  type GatehouseClients,
  type WatchSessionResponse,
} from "@gatehouse/sdk";

/** StoryOptions configures runStory. */
export interface StoryOptions {
  /** clients returns the service clients of a caller with the given token (none: anonymous). */
  clients: (token?: string) => GatehouseClients;
  /** adminPassword is the password of the administrator. */
  adminPassword: string;
  /** adminUsername is the administrator's username. Default "admin". */
  adminUsername?: string;
  /** log receives each line the story prints. */
  log?: (line: string) => void;
  /** timeoutMs bounds the watch stream, and so the story. Default 30 s. */
  timeoutMs?: number;
}

/** StoryResult is what the story saw, as plain JSON (a browser page hands it back to a test). */
export interface StoryResult {
  username: string;
  userId: string;
  role: string;
  sessionId: string;
  /** validatedRoles are the roles ValidateSession returned right after the login. */
  validatedRoles: string[];
  /** snapshotRoles are the roles of WatchSession's first message. */
  snapshotRoles: string[];
  /** rolesChanged is the roles_changed message that followed the grant. */
  rolesChanged: { roles: string[]; added: string[]; removed: string[] };
  /** terminated is the terminated message that followed the administrator's termination. */
  terminated: { reason: string; note: string };
  /** streamEnded is whether the stream ended (with OK) after terminated. */
  streamEnded: boolean;
  /** validateAfterEnd is how ValidateSession of the ended session failed. */
  validateAfterEnd: { code: string; reason: string; terminationReason: string };
  /** lines are the lines the story printed. */
  lines: string[];
}

/** runStory runs the story against a node and returns what it saw; it throws if the node strays. */
export async function runStory(options: StoryOptions): Promise<StoryResult> {
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    options.log?.(line);
  };
  const timeoutMs = options.timeoutMs ?? 30_000;

  const login = async (username: string, password: string) =>
    options.clients().session.createSession({
      credential: { case: "password", value: { username, password } },
      type: SessionType.WEB_BROWSER,
    });

  const adminLogin = await login(options.adminUsername ?? "admin", options.adminPassword);
  const admin = options.clients(adminLogin.token);
  say(`admin logged in (roles: ${adminLogin.roles.join(", ")})`);

  const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const username = `story-${suffix}`;
  const password = `story-password-${suffix}`;
  const role = `story.reader-${suffix}`;
  const { user } = await admin.identity.createUser({ username, password, displayName: "Story User" });
  if (!user) {
    throw new Error("CreateUser returned no user");
  }
  await admin.identity.createRole({ name: role, description: "a role the story grants" });
  say(`admin created user ${username} and role ${role}`);

  const userLogin = await login(username, password);
  const sessionId = userLogin.session?.id ?? "";
  const me = options.clients(userLogin.token);
  const validated = await me.session.validateSession({ token: userLogin.token });
  say(`${username} logged in: session ${sessionId}, valid: ${validated.session?.active}, roles: [${validated.roles.join(", ")}]`);

  const abort = new AbortController();
  const stream = me.session.watchSession({}, { signal: abort.signal, timeoutMs })[Symbol.asyncIterator]();
  // next returns the next message of the stream that is not a heartbeat.
  const next = async (waitingFor: string): Promise<WatchSessionResponse> => {
    for (;;) {
      const r = await stream.next();
      if (r.done) {
        throw new Error(`WatchSession ended while waiting for ${waitingFor}`);
      }
      if (r.value.event.case !== "heartbeat") {
        return r.value;
      }
    }
  };
  try {
    const first = await next("snapshot");
    if (first.event.case !== "snapshot") {
      throw new Error(`WatchSession began with ${first.event.case}, not snapshot`);
    }
    const snapshotRoles = first.event.value.roles;
    say(`watch: snapshot roles=[${snapshotRoles.join(", ")}]`);

    await admin.identity.grantRole({ role, principal: { case: "userId", value: user.id } });
    say(`admin granted ${role} to ${username}`);
    const changed = await next("roles_changed");
    if (changed.event.case !== "rolesChanged") {
      throw new Error(`after the grant WatchSession sent ${changed.event.case}, not roles_changed`);
    }
    const rc = changed.event.value;
    say(`watch: roles_changed added=[${rc.added.join(", ")}] removed=[${rc.removed.join(", ")}] roles=[${rc.roles.join(", ")}]`);

    const note = "the story is over";
    await admin.session.terminateSession({ sessionId, note });
    say(`admin terminated session ${sessionId}`);
    const ended = await next("terminated");
    if (ended.event.case !== "terminated") {
      throw new Error(`after the termination WatchSession sent ${ended.event.case}, not terminated`);
    }
    const reason = terminationReasonName(ended.event.value.reason);
    say(`watch: terminated reason=${reason} note=${JSON.stringify(ended.event.value.note)}`);
    const streamEnded = (await stream.next()).done === true;
    say(`watch: stream ${streamEnded ? "ended" : "did not end"}`);

    let validateAfterEnd: StoryResult["validateAfterEnd"] | undefined;
    try {
      await me.session.validateSession({ token: userLogin.token });
    } catch (err) {
      const d = errorDetails(err);
      const why = terminationReason(err);
      validateAfterEnd = {
        code: Code[d.code],
        reason: d.reason,
        terminationReason: why === undefined ? "" : terminationReasonName(why),
      };
      say(`validate after the end: ${validateAfterEnd.code} ${d.reason} (${validateAfterEnd.terminationReason})`);
    }
    if (!validateAfterEnd) {
      throw new Error("ValidateSession of the terminated session succeeded");
    }
    return {
      username,
      userId: user.id,
      role,
      sessionId,
      validatedRoles: validated.roles,
      snapshotRoles,
      rolesChanged: { roles: rc.roles, added: rc.added, removed: rc.removed },
      terminated: { reason, note: ended.event.value.note },
      streamEnded,
      validateAfterEnd,
      lines,
    };
  } finally {
    abort.abort();
  }
}
