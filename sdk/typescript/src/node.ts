/**
 * Clients for Node: native gRPC (HTTP/2 to the node's gRPC port, --grpc-addr) and Connect (to its
 * HTTP port, --http-addr), over connect-node.
 *
 * @module
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";

import { bearerToken, type TokenSource } from "./auth.js";
import { createGatehouseClients, type GatehouseClients } from "./clients.js";

/** NodeProtocol is the wire protocol of a Node client. */
export type NodeProtocol = "grpc" | "connect";

/** NodeClientOptions configures createNodeTransport and createNodeClients. */
export interface NodeClientOptions {
  /**
   * baseUrl is the node's address: for "grpc" its gRPC port (http://127.0.0.1:9090), for
   * "connect" its HTTP port (http://127.0.0.1:8080). https:// when the node serves TLS.
   */
  baseUrl: string;
  /** protocol is "grpc" (the default) or "connect". */
  protocol?: NodeProtocol;
  /** token is the session token sent as `authorization: Bearer`; none for anonymous calls. */
  token?: TokenSource;
  /**
   * httpVersion is the HTTP version of Connect calls: "1.1" (the default) or "2" (the node's HTTP
   * port also speaks HTTP/2 without TLS). gRPC always uses HTTP/2.
   */
  httpVersion?: "1.1" | "2";
  /** useBinaryFormat sends Connect calls as binary protobuf instead of JSON (gRPC is binary). */
  useBinaryFormat?: boolean;
  /** defaultTimeoutMs is the deadline of calls that set none. */
  defaultTimeoutMs?: number;
  /** interceptors run before the bearer-token interceptor, outermost first. */
  interceptors?: Interceptor[];
}

/** createNodeTransport returns a connect-node transport to a Gatehouse node. */
export function createNodeTransport(options: NodeClientOptions): Transport {
  const interceptors = [...(options.interceptors ?? []), bearerToken(options.token)];
  const common = {
    baseUrl: options.baseUrl,
    interceptors,
    defaultTimeoutMs: options.defaultTimeoutMs,
  };
  switch (options.protocol ?? "grpc") {
    case "grpc":
      return createGrpcTransport(common);
    case "connect":
      return options.httpVersion === "2"
        ? createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: options.useBinaryFormat })
        : createConnectTransport({ ...common, httpVersion: "1.1", useBinaryFormat: options.useBinaryFormat });
    default:
      throw new Error(`@gatehouse/sdk: unknown Node protocol ${String(options.protocol)} (grpc or connect)`);
  }
}

/** createNodeClients returns the Gatehouse service clients over createNodeTransport(options). */
export function createNodeClients(options: NodeClientOptions): GatehouseClients {
  return createGatehouseClients(createNodeTransport(options));
}
