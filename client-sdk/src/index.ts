export { BasaltError, ERROR_CATALOGUE, isErrorCode } from './errors.js';
export type { ErrorBody, ErrorCode, ErrorDetails } from './errors.js';
export { createClient } from './client.js';
export type { BasaltClient, ClientOptions } from './client.js';
