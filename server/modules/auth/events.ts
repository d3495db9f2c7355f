import type { Queryable } from '../../internal/db.js';
import type { MfaEventType, PasskeyEventType } from '../audit/events.js';
import type { ClientContext } from './accounts.js';

/**
 * Auth events of second factors, as they happen: the one place an audit log (or metrics)
 * hooks in. The MFA and passkey services call the sink buildAuthModule wires (the audit log),
 * inside the change's transaction where there is one.
 */
export type AuthEventType = MfaEventType | PasskeyEventType;

export interface AuthEvent {
  type: AuthEventType;
  /** The user concerned; null for a failed passkey sign-in that named no known credential. */
  userId: string | null;
  /** Who did it: the user themselves, or the service key (an admin reset). */
  by: 'user' | 'service';
  ip: string | null;
  userAgent: string | null;
  /** e.g. `{factor_id}`, `{passkey_id}`, `{reason}` for failures. Never a code or secret. */
  details: Record<string, unknown>;
}

/** `tx`: the transaction of the change the event is about; the event commits (or not) with it. */
export type AuthEventSink = (event: AuthEvent, options?: { tx?: Queryable }) => void | Promise<void>;

/** An event a user caused from `context` (the client of their request), in `tx` when given. */
export function userEvent(
  sink: AuthEventSink,
  type: AuthEventType,
  userId: string | null,
  context: ClientContext,
  details: Record<string, unknown> = {},
  tx?: Queryable,
): Promise<void> | void {
  return sink({ type, userId, by: 'user', ip: context.ip, userAgent: context.userAgent, details }, { tx });
}
