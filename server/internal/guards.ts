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
