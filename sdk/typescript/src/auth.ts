import type { Interceptor } from "@connectrpc/connect";

/**
 * TokenSource is the session token a client sends: a fixed token, or a function asked before every
 * call (for a token that changes, e.g. after a new login). An empty or undefined token sends no
 * authorization header: the call is anonymous (CreateSession, ValidateSession).
 */
export type TokenSource = string | undefined | (() => string | undefined | Promise<string | undefined>);

/**
 * bearerToken returns an interceptor that sends `authorization: Bearer <token>` on every call
 * (unary and streaming), unless the call already carries an authorization header.
 */
export function bearerToken(token: TokenSource): Interceptor {
  return (next) => async (req) => {
    if (!req.header.has("authorization")) {
      const value = typeof token === "function" ? await token() : token;
      if (value) {
        req.header.set("authorization", `Bearer ${value}`);
      }
    }
    return next(req);
  };
}
