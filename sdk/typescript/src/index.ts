/**
 * @gatehouse/sdk: the Gatehouse API for TypeScript. This entry point has what works everywhere:
 * the generated messages, enums and service descriptors (gatehouse.v1, from gen/ts), the
 * bearer-token interceptor, the service clients over any transport, and error helpers. Transports
 * come from `@gatehouse/sdk/node` (gRPC, Connect) and `@gatehouse/sdk/web` (Connect, gRPC-Web).
 *
 * @module
 */
export * from "./gen/gatehouse/v1/common_pb.js";
export * from "./gen/gatehouse/v1/event_pb.js";
export * from "./gen/gatehouse/v1/identity_pb.js";
export * from "./gen/gatehouse/v1/policy_pb.js";
export * from "./gen/gatehouse/v1/session_pb.js";
export {
  BadRequestSchema,
  BadRequest_FieldViolationSchema,
  ErrorInfoSchema,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";

export { bearerToken, type TokenSource } from "./auth.js";
export { createGatehouseClients, type GatehouseClients } from "./clients.js";
export {
  Code,
  ConnectError,
  ERROR_DOMAIN,
  errorCode,
  errorDetails,
  errorInfo,
  errorReason,
  isGatehouseError,
  terminationReason,
  terminationReasonName,
  type GatehouseErrorDetails,
} from "./errors.js";
