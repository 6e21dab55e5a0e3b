import { Code, ConnectError } from "@connectrpc/connect";

import { TerminationReason, TerminationReasonSchema } from "./gen/gatehouse/v1/common_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";

/** ERROR_DOMAIN is the `domain` of every google.rpc.ErrorInfo that Gatehouse sends. */
export const ERROR_DOMAIN = "gatehouse.dev";

/**
 * GatehouseErrorDetails is what a caller needs to tell one Gatehouse error from another, read from
 * the status and its details (never parsed out of the message).
 */
export interface GatehouseErrorDetails {
  /** code is the status code (Code.Unauthenticated, Code.ResourceExhausted, ...). */
  readonly code: Code;
  /** reason is the ErrorInfo reason (SESSION_TERMINATED, CONCURRENT_SESSION_LIMIT, ...), or "". */
  readonly reason: string;
  /** metadata is the ErrorInfo metadata (e.g. termination_reason), or an empty object. */
  readonly metadata: Readonly<Record<string, string>>;
  /** message is the server's message, safe to show (without the "[code]" prefix). */
  readonly message: string;
  /** violations are the google.rpc.BadRequest field violations of invalid input. */
  readonly violations: readonly BadRequest_FieldViolation[];
  /** cause is the error as Connect reports it. */
  readonly cause: ConnectError;
}

/**
 * errorDetails reads a Gatehouse error: its code, ErrorInfo reason and metadata, and field
 * violations. Any thrown value is accepted: what is not a ConnectError becomes Code.Unknown (or
 * Code.Canceled for an abort), as ConnectError.from converts it.
 */
export function errorDetails(err: unknown): GatehouseErrorDetails {
  const cause = ConnectError.from(err);
  const info = errorInfo(cause);
  return {
    code: cause.code,
    reason: info?.reason ?? "",
    metadata: info?.metadata ?? {},
    message: cause.rawMessage,
    violations: cause.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations),
    cause,
  };
}

/**
 * errorInfo returns the google.rpc.ErrorInfo of a Gatehouse error, or undefined if err carries none
 * (e.g. a network failure).
 */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  const infos = ConnectError.from(err).findDetails(ErrorInfoSchema);
  // NOTE: Gatehouse sends at most one ErrorInfo, in its own domain; prefer that one should a proxy
  // have added another.
  return infos.find((i) => i.domain === ERROR_DOMAIN) ?? infos[0];
}

/** errorCode returns the status code of err (Code.Unknown for what is not a ConnectError). */
export function errorCode(err: unknown): Code {
  return ConnectError.from(err).code;
}

/** errorReason returns the ErrorInfo reason of err, or "" if it has none. */
export function errorReason(err: unknown): string {
  return errorInfo(err)?.reason ?? "";
}

/**
 * isGatehouseError reports whether err has the given code and, if reason is given, that ErrorInfo
 * reason: `isGatehouseError(err, Code.ResourceExhausted, "CONCURRENT_SESSION_LIMIT")`.
 */
export function isGatehouseError(err: unknown, code: Code, reason?: string): boolean {
  const d = errorDetails(err);
  return d.code === code && (reason === undefined || d.reason === reason);
}

/**
 * terminationReason returns why the session of a failed call ended: ValidateSession, WatchSession
 * and authenticated calls with an ended session's token fail with Code.Unauthenticated, reason
 * SESSION_TERMINATED, and the reason in the ErrorInfo metadata `termination_reason`. It returns
 * undefined when err is not such an error (or names a reason this SDK does not know).
 */
export function terminationReason(err: unknown): TerminationReason | undefined {
  const name = errorInfo(err)?.metadata["termination_reason"];
  if (!name) {
    return undefined;
  }
  const value = TerminationReasonSchema.values.find((v) => v.name === name);
  return value?.number as TerminationReason | undefined;
}

/**
 * terminationReasonName returns the proto name of a termination reason
 * (TERMINATION_REASON_REVOKED_BY_ADMIN), as REST and the event log spell it.
 */
export function terminationReasonName(reason: TerminationReason): string {
  return TerminationReasonSchema.value[reason]?.name ?? `TERMINATION_REASON_${reason}`;
}

export { Code, ConnectError };
