import { isUser, type Caller, type UserCaller } from './caller.js';
import { AppError } from './errors.js';

/** Admin calls need the service key. A missing token is 401; a user's token is 403. */
export function requireService(caller: Caller): void {
  if (caller.role === 'service') return;
  if (caller.role === 'public') throw new AppError('UNAUTHENTICATED', 'This call needs the service key.');
  throw new AppError('FORBIDDEN', 'This call needs the service key.');
}

/** Calls about "my" account need a signed-in (or anonymous) user's access token. */
export function requireUser(caller: Caller): UserCaller {
  if (isUser(caller)) return caller;
  throw new AppError('UNAUTHENTICATED', 'This call needs a user access token.');
}

/**
 * Account changes that only the account's owner may make — password, email, second factors,
 * passkeys, ending other sessions — are refused (FORBIDDEN, `details.reason: "impersonated"`)
 * in a session an admin started as the user ("view as", docs/auth.md#impersonation).
 */
export function refuseImpersonated(caller: UserCaller, action: string): void {
  if (caller.impersonator === undefined) return;
  throw new AppError('FORBIDDEN', `An impersonated session cannot do this: ${action}.`, {
    details: { reason: 'impersonated', impersonator: caller.impersonator },
  });
}
