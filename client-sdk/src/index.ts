export { BasaltError, ERROR_CATALOGUE, isErrorCode } from './errors.js';
export type { ErrorBody, ErrorCode, ErrorDetails } from './errors.js';
export { createClient } from './client.js';
export type { BasaltClient, ClientOptions } from './client.js';
export { AuthClient } from './auth.js';
export type {
  AuthChangeEvent,
  AuthResponse,
  AuthStateListener,
  Session,
  SessionInfo,
  User,
  VerifyType,
} from './auth.js';
