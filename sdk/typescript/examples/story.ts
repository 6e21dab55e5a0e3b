/**
 * The Gatehouse story from Node: logs in as the administrator, creates a user and a role, logs the
 * user in and watches the session, grants the role (roles_changed) and ends the session
 * (terminated).
 *
 *   GATEHOUSE_ADMIN_PASSWORD=... node out/examples/story.js
 *
 * Environment: GATEHOUSE_PROTOCOL (grpc, the default, or connect), GATEHOUSE_GRPC_URL (the gRPC
 * port, default http://127.0.0.1:9090), GATEHOUSE_URL (the HTTP port, for connect, default
 * http://127.0.0.1:8080), GATEHOUSE_ADMIN_USERNAME (default admin), GATEHOUSE_ADMIN_PASSWORD.
 *
 * @module
 */
import { Code, errorDetails } from "@gatehouse/sdk";
import { createNodeClients, type NodeProtocol } from "@gatehouse/sdk/node";

import { runStory } from "./run-story.js";

/** withScheme turns host:port into http://host:port and leaves URLs alone. */
function withScheme(addr: string): string {
  return /^[a-z]+:\/\//i.test(addr) ? addr : `http://${addr}`;
}

async function main(): Promise<void> {
  const protocol = (process.env["GATEHOUSE_PROTOCOL"] ?? "grpc") as NodeProtocol;
  if (protocol !== "grpc" && protocol !== "connect") {
    throw new Error(`GATEHOUSE_PROTOCOL must be grpc or connect, not ${String(protocol)}`);
  }
  const adminPassword = process.env["GATEHOUSE_ADMIN_PASSWORD"];
  if (!adminPassword) {
    throw new Error("set GATEHOUSE_ADMIN_PASSWORD to the administrator's password");
  }
  const baseUrl =
    protocol === "grpc"
      ? withScheme(process.env["GATEHOUSE_GRPC_URL"] ?? "127.0.0.1:9090")
      : withScheme(process.env["GATEHOUSE_URL"] ?? "127.0.0.1:8080");
  console.log(`story over ${protocol} at ${baseUrl}`);
  await runStory({
    clients: (token) => createNodeClients({ baseUrl, protocol, token }),
    adminUsername: process.env["GATEHOUSE_ADMIN_USERNAME"] ?? "admin",
    adminPassword,
    log: (line) => console.log(line),
  });
}

main().catch((err: unknown) => {
  const d = errorDetails(err);
  console.error(`story failed: ${Code[d.code]} ${d.reason} ${d.message}`);
  process.exitCode = 1;
});
