/**
 * The live node the tests run against, from the environment that integration/sdk_typescript_test.go
 * (or a developer) sets: GATEHOUSE_URL (the HTTP port), GATEHOUSE_GRPC_URL (the gRPC port) and
 * GATEHOUSE_ADMIN_PASSWORD.
 *
 * @module
 */

/** LiveNode names a running Gatehouse node. */
export interface LiveNode {
  /** httpUrl is the node's HTTP port (Connect, gRPC-Web, REST). */
  httpUrl: string;
  /** grpcUrl is the node's gRPC port. */
  grpcUrl: string;
  /** adminPassword is the password of the user admin. */
  adminPassword: string;
}

/** withScheme turns host:port into http://host:port and leaves URLs alone. */
function withScheme(addr: string): string {
  return /^[a-z]+:\/\//i.test(addr) ? addr : `http://${addr}`;
}

/**
 * liveNode returns the node of the environment. It throws (the tests fail, never skip) when the
 * environment does not name one.
 */
export function liveNode(): LiveNode {
  const missing = ["GATEHOUSE_URL", "GATEHOUSE_GRPC_URL", "GATEHOUSE_ADMIN_PASSWORD"].filter((k) => !process.env[k]);
  if (missing.length > 0) {
    throw new Error(
      `the SDK tests need a live node: set ${missing.join(", ")} ` +
        "(go test -run TestSDKTypeScript ./integration/ starts one and sets them)",
    );
  }
  return {
    httpUrl: withScheme(process.env["GATEHOUSE_URL"]!),
    grpcUrl: withScheme(process.env["GATEHOUSE_GRPC_URL"]!),
    adminPassword: process.env["GATEHOUSE_ADMIN_PASSWORD"]!,
  };
}

/** unique returns a name no other test uses: prefix, then a random lowercase suffix. */
export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}
