export { BasaltError, ERROR_CATALOGUE, isErrorCode } from './errors.js';
export type { ErrorBody, ErrorCode, ErrorDetails } from './errors.js';
export { createClient, HttpTransport } from './client.js';
export type { BasaltClient, ClientOptions, RetryOptions } from './client.js';
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
export {
  CollectionRef,
  DbClient,
  DocumentRef,
  Query,
  WriteBatch,
  and,
  arrayRemove,
  arrayUnion,
  deleteField,
  increment,
  or,
  serverTimestamp,
  where,
} from './db.js';
export type {
  BatchResult,
  Condition,
  Doc,
  DocumentData,
  FieldTransform,
  Filter,
  OrderDirection,
  QueryBody,
  QueryResult,
  RedactedDoc,
  UpdateData,
  WhereOp,
  WriteData,
  WriteOptions,
} from './db.js';
export { RealtimeChannel, RealtimeClient } from './realtime.js';
export type {
  DocChangeType,
  LiveDoc,
  LiveQuery,
  PresenceEntry,
  PresenceState,
  QuerySnapshot,
  RealtimeStatus,
  SendResult,
  WebSocketConstructor,
  WebSocketLike,
} from './realtime.js';
export { BucketRef, StorageClient, RESUMABLE_THRESHOLD_BYTES } from './storage.js';
export { ResumableUpload } from './resumable.js';
export type { ResumableUploadOptions } from './resumable.js';
export { FunctionsClient } from './functions.js';
export type { ImageTransform, ListOptions, ListResult, StorageObject, UploadBody, UploadOptions } from './storage.js';
