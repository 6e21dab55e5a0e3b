import { createClient, type Client, type Transport } from "@connectrpc/connect";

import { IdentityService } from "./gen/gatehouse/v1/identity_pb.js";
import { PolicyService } from "./gen/gatehouse/v1/policy_pb.js";
import { SessionService } from "./gen/gatehouse/v1/session_pb.js";

/** GatehouseClients holds one client per Gatehouse service, all over the same transport. */
export interface GatehouseClients {
  /** identity is the IdentityService client: users, groups, roles and grants. */
  readonly identity: Client<typeof IdentityService>;
  /** session is the SessionService client: login, validation, termination, WatchSession. */
  readonly session: Client<typeof SessionService>;
  /** policy is the PolicyService client: session policies and Check. */
  readonly policy: Client<typeof PolicyService>;
  /** transport is the transport the clients share. */
  readonly transport: Transport;
}

/**
 * createGatehouseClients returns the clients of the three services over transport, which can be any
 * Connect transport (createNodeTransport, createWebTransport, or one of the caller's own).
 */
export function createGatehouseClients(transport: Transport): GatehouseClients {
  return {
    identity: createClient(IdentityService, transport),
    session: createClient(SessionService, transport),
    policy: createClient(PolicyService, transport),
    transport,
  };
}
