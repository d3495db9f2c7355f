export { BasaltError, ERROR_CATALOGUE, isBasaltError, isErrorCode } from './errors.js';
export type {
  AnyBasaltError,
  ErrorBody,
  ErrorCode,
  ErrorDetails,
  ErrorDetailsMap,
  ErrorDetailsOf,
  ValidationIssue,
} from './errors.js';
export { createClient, HttpTransport } from './client.js';
export type { BasaltClient, ClientOptions, RetryOptions, SessionStorage } from './client.js';
export { AuthClient, MfaClient, PasskeysClient } from './auth.js';
export type {
  AssuranceLevel,
  AuthChangeEvent,
  AuthResponse,
  MfaFactor,
  MfaVerifyResponse,
  Passkey,
  PasskeyRegisterResponse,
  TotpEnrollment,
  AuthStateListener,
  Session,
  SessionInfo,
  User,
  VerifyType,
} from './auth.js';
export {
  AggregateQuery,
  CollectionRef,
  DbClient,
  DocumentRef,
  Query,
  WriteBatch,
  and,
  avg,
  count,
  max,
  min,
  sum,
  arrayRemove,
  arrayUnion,
  deleteField,
  increment,
  or,
  serverTimestamp,
  where,
} from './db.js';
export type {
  ArrayRemoveTransform,
  ArrayUnionTransform,
  AggregateGroup,
  AggregateOptions,
  AggregateSpec,
  BatchResult,
  Condition,
  DeleteFieldTransform,
  Doc,
  DocumentData,
  FieldPath,
  FieldTransform,
  Filter,
  IncrementTransform,
  OrderDirection,
  PathValue,
  QueryBody,
  QueryPath,
  QueryResult,
  RedactedDoc,
  Selected,
  SnapshotMetadata,
  ServerTimestampTransform,
  SystemField,
  TransformFor,
  UpdateData,
  WhereOp,
  WhereValue,
  WriteData,
  WriteOptions,
} from './db.js';
export type { OfflineChange, OfflineStorage, OfflineStoreName } from './offline/persistence.js';
export type { CachedResult, OfflineOptions, PendingWrite, WriteErrorListener } from './offline/engine.js';
export type { PendingOp } from './offline/local.js';
export { RealtimeChannel, RealtimeClient } from './realtime.js';
export type {
  ChannelEvents,
  DocChangeType,
  LiveAggregateTarget,
  LiveDoc,
  PresenceCallback,
  LiveQuery,
  LiveTarget,
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
export { EventsClient, type BatchEvent, type PublishOptions } from './events.js';
export type {
  ImageTransform,
  ListOptions,
  ListResult,
  RemoveResult,
  SignedUrl,
  SignedUrlOptions,
  StorageObject,
  TransferOptions,
  UploadBody,
  UploadOptions,
} from './storage.js';
