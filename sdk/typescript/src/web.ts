/**
 * Clients for browsers: Connect and gRPC-Web to the node's HTTP port (--http-addr), over
 * connect-web (fetch). A page served from another origin needs the node to allow it
 * (--cors-allowed-origin).
 *
 * @module
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { bearerToken, type TokenSource } from "./auth.js";
import { createGatehouseClients, type GatehouseClients } from "./clients.js";

/** WebProtocol is the wire protocol of a browser client. */
export type WebProtocol = "connect" | "grpc-web";

/** WebClientOptions configures createWebTransport and createWebClients. */
export interface WebClientOptions {
  /** baseUrl is the node's HTTP port (https://gatehouse.example.com, http://127.0.0.1:8080). */
  baseUrl: string;
  /** protocol is "connect" (the default) or "grpc-web". */
  protocol?: WebProtocol;
  /** token is the session token sent as `authorization: Bearer`; none for anonymous calls. */
  token?: TokenSource;
  /** useBinaryFormat sends binary protobuf instead of JSON (gRPC-Web is binary by default). */
  useBinaryFormat?: boolean;
  /** defaultTimeoutMs is the deadline of calls that set none. */
  defaultTimeoutMs?: number;
  /** interceptors run before the bearer-token interceptor, outermost first. */
  interceptors?: Interceptor[];
  /** fetch replaces globalThis.fetch (e.g. to add credentials: "include"). */
  fetch?: typeof globalThis.fetch;
}

/** createWebTransport returns a connect-web transport to a Gatehouse node. */
export function createWebTransport(options: WebClientOptions): Transport {
  const common = {
    baseUrl: options.baseUrl,
    interceptors: [...(options.interceptors ?? []), bearerToken(options.token)],
    defaultTimeoutMs: options.defaultTimeoutMs,
    fetch: options.fetch,
  };
  switch (options.protocol ?? "connect") {
    case "connect":
      return createConnectTransport({ ...common, useBinaryFormat: options.useBinaryFormat });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, useBinaryFormat: options.useBinaryFormat ?? true });
    default:
      throw new Error(`@gatehouse/sdk: unknown web protocol ${String(options.protocol)} (connect or grpc-web)`);
  }
}

/** createWebClients returns the Gatehouse service clients over createWebTransport(options). */
export function createWebClients(options: WebClientOptions): GatehouseClients {
  return createGatehouseClients(createWebTransport(options));
}
