import { randomUUID } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { isUser, PUBLIC_CALLER, type Caller } from '../../internal/caller.js';
import { AppError, isAppError, type ErrorCode, type ErrorDetails } from '../../internal/errors.js';
import { assertUserJson, isStorableString } from '../../internal/user-json.js';
import { COLLECTION_NAME, DOCUMENT_ID } from '../documents/names.js';

/** Client → server messages, after validation. */
export type ClientMessage =
  | { type: 'auth'; access_token: string | null }
  | {
      type: 'subscribe';
      id: string;
      collection: string;
      doc_id?: string;
      query?: Record<string, unknown>;
      resume_from?: string;
      /** A live aggregate (`where`, `group_by`, `aggregates`, `order_by`, `limit` as in `/aggregate`). */
      aggregate?: Record<string, unknown>;
    }
  | { type: 'unsubscribe'; id: string }
  | { type: 'ping' }
  | { type: 'pong' }
  | { type: 'join'; channel: string; presence?: unknown }
  | { type: 'leave'; channel: string }
  /** `id`, when given, asks for an acknowledgement: `sent` once delivered to the channel, or an `error` naming it. */
  | { type: 'broadcast'; channel: string; event: string; payload?: unknown; id?: string };

/** Server → client frames. */
export type ServerFrame = { type: string } & Record<string, unknown>;

const ALLOWED_FIELDS: Record<ClientMessage['type'], readonly string[]> = {
  auth: ['type', 'access_token'],
  subscribe: ['type', 'id', 'collection', 'doc_id', 'query', 'resume_from', 'aggregate'],
  unsubscribe: ['type', 'id'],
  ping: ['type'],
  pong: ['type'],
  join: ['type', 'channel', 'presence'],
  leave: ['type', 'channel'],
  broadcast: ['type', 'channel', 'event', 'payload', 'id'],
};

const SUBSCRIPTION_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * A client message refused before it was handled, with what it concerned (its subscription
 * id or channel), so the error frame can name it as it does for errors raised later.
 */
export class RefusedMessage extends AppError {
  constructor(
    readonly concerns: { id?: string; channel?: string },
    message: string,
    details?: ErrorDetails,
  ) {
    super('INVALID_REQUEST', message, details !== undefined ? { details } : {});
  }
}

function invalid(message: string, id?: string): AppError {
  return new RefusedMessage(id !== undefined ? { id } : {}, message);
}

/**
 * Refuses a message any of whose values nests too deep or holds a string Postgres cannot
 * store (NUL, unpaired surrogate), before anything recursive (JSON.stringify, the query
 * compiler, jsonb, the rule evaluator) sees it: such a value would otherwise overflow the
 * stack or fail in Postgres, far from the socket that sent it.
 */
function assertStorableFields(raw: Record<string, unknown>, concerns: RefusedMessage['concerns']): void {
  for (const [field, value] of Object.entries(raw)) {
    try {
      assertUserJson(value, field);
    } catch (error) {
      if (!isAppError(error)) throw error;
      throw new RefusedMessage(concerns, error.message, error.details);
    }
  }
}

/** What a raw message concerns, as far as it can be told from valid fields. */
function concernsOf(raw: Record<string, unknown>): RefusedMessage['concerns'] {
  const concerns: RefusedMessage['concerns'] = {};
  if (typeof raw.id === 'string' && SUBSCRIPTION_ID.test(raw.id)) concerns.id = raw.id;
  if (typeof raw.channel === 'string' && isChannelName(raw.channel)) concerns.channel = raw.channel;
  return concerns;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isChannelName(value: string): boolean {
  return value.length >= 1 && value.length <= 255 && !/[\p{Cc}]/u.test(value) && isStorableString(value);
}

function channelName(value: unknown): string {
  if (typeof value !== 'string' || !isChannelName(value)) {
    throw invalid('"channel" must be a string of 1 to 255 printable characters.');
  }
  return value;
}

/**
 * Parses one text frame. Unknown types and unknown fields are rejected: a control
 * protocol that silently ignores fields hides client bugs (and typos like `docId`).
 */
export function parseClientMessage(text: string): ClientMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid('The message is not valid JSON.');
  }
  if (!isObject(raw)) throw invalid('A message must be a JSON object with a "type".');
  const type = raw.type;
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(ALLOWED_FIELDS, type)) {
    throw invalid(`Unknown message type ${JSON.stringify(type ?? null)}.`);
  }
  const known = ALLOWED_FIELDS[type as ClientMessage['type']];
  const id = typeof raw.id === 'string' ? raw.id : undefined;
  const extra = Object.keys(raw).filter((key) => !known.includes(key));
  if (extra.length > 0) throw invalid(`Unknown field(s) in "${type}": ${extra.join(', ')}.`, id);
  assertStorableFields(raw, concernsOf(raw));

  switch (type) {
    case 'auth': {
      const token = raw.access_token;
      if (token !== null && (typeof token !== 'string' || token.length === 0 || token.length > 8192)) {
        throw invalid('"access_token" must be a token string, or null to sign out.');
      }
      return { type, access_token: token };
    }
    case 'subscribe': {
      if (typeof raw.id !== 'string' || !SUBSCRIPTION_ID.test(raw.id)) {
        throw invalid('"id" must be 1 to 128 characters of [A-Za-z0-9_.:-].');
      }
      if (typeof raw.collection !== 'string' || !COLLECTION_NAME.test(raw.collection)) {
        throw invalid('"collection" is not a valid collection name.', raw.id);
      }
      const message: ClientMessage = { type, id: raw.id, collection: raw.collection };
      if (raw.doc_id !== undefined) {
        if (typeof raw.doc_id !== 'string' || !DOCUMENT_ID.test(raw.doc_id)) {
          throw invalid('"doc_id" is not a valid document id.', raw.id);
        }
        message.doc_id = raw.doc_id;
      }
      if (raw.query !== undefined) {
        if (!isObject(raw.query)) throw invalid('"query" must be an object.', raw.id);
        if (message.doc_id !== undefined) throw invalid('Give either "doc_id" or "query", not both.', raw.id);
        message.query = raw.query;
      }
      if (raw.resume_from !== undefined) {
        if (typeof raw.resume_from !== 'string' || raw.resume_from.length === 0 || raw.resume_from.length > 256) {
          throw invalid('"resume_from" must be a cursor string.', raw.id);
        }
        message.resume_from = raw.resume_from;
      }
      if (raw.aggregate !== undefined) {
        if (!isObject(raw.aggregate)) throw invalid('"aggregate" must be an object.', raw.id);
        // An aggregate has no documents to resume: it is evaluated afresh on every subscribe.
        if (raw.doc_id !== undefined || raw.query !== undefined || raw.resume_from !== undefined) {
          throw invalid('"aggregate" takes no "doc_id", "query" or "resume_from".', raw.id);
        }
        message.aggregate = raw.aggregate;
      }
      return message;
    }
    case 'unsubscribe':
      if (typeof raw.id !== 'string' || !SUBSCRIPTION_ID.test(raw.id)) throw invalid('"id" must be a subscription id.');
      return { type, id: raw.id };
    case 'ping':
    case 'pong':
      return { type };
    case 'join':
      return raw.presence === undefined
        ? { type, channel: channelName(raw.channel) }
        : { type, channel: channelName(raw.channel), presence: raw.presence };
    case 'leave':
      return { type, channel: channelName(raw.channel) };
    default: {
      const channel = channelName(raw.channel);
      if (raw.id !== undefined && (typeof raw.id !== 'string' || !SUBSCRIPTION_ID.test(raw.id))) {
        throw invalid('"id" must be a string of 1 to 128 characters of A-Z, a-z, 0-9, "_", ".", ":" and "-".');
      }
      if (typeof raw.event !== 'string' || raw.event.length < 1 || raw.event.length > 255) {
        throw invalid('"event" must be a string of 1 to 255 characters.', raw.id);
      }
      const broadcast = { type: 'broadcast' as const, channel, event: raw.event, payload: raw.payload ?? null };
      return raw.id === undefined ? broadcast : { ...broadcast, id: raw.id };
    }
  }
}

export interface ConnectionLimits {
  sendBufferBytes: number;
  messagesPerSecond: number;
  /** Told of every frame sent or received, for the usage meter. */
  onMessage?: () => void;
}

/**
 * A UUID held as one flat string: randomUUID() returns a rope of some fifteen pieces, which
 * stays that way as a property and costs ~450 bytes per connection instead of ~50.
 */
function connectionId(): string {
  return Buffer.from(randomUUID(), 'latin1').toString('latin1');
}

/** The TCP socket under a websocket (ws keeps it as `_socket`; absent before open and in tests' fakes). */
function rawSocket(socket: WebSocket): Duplex | null {
  const raw = (socket as unknown as { _socket?: unknown })._socket;
  return raw instanceof Duplex ? raw : null;
}

/**
 * The websocket plugin leaves the upgrade's HTTP request and response reachable for the
 * socket's whole life: the response stays the TCP socket's current message, and its error
 * listener closes over request and reply (with their logger and headers). That is most of
 * an idle connection's memory, for nothing once the socket is open; this drops both. After
 * an error ws closes the socket by itself; the realtime service's own listener logs it.
 */
function releaseUpgrade(socket: WebSocket): void {
  const raw = (socket as unknown as { _socket?: { _httpMessage?: { detachSocket?: (s: unknown) => void } | null } })
    ._socket;
  if (raw?._httpMessage && typeof raw._httpMessage.detachSocket === 'function') raw._httpMessage.detachSocket(raw);
  socket.removeAllListeners('error');
}

/** Close codes the server uses besides the standard ones. */
export const CLOSE_SLOW_CONSUMER = 4008;
export const CLOSE_GOING_AWAY = 1001;
/**
 * A live query could not be kept exact because Postgres was unreachable (a restart): the
 * client reconnects with backoff and resumes from its cursors (the standard "try again later").
 */
export const CLOSE_TRY_AGAIN_LATER = 1013;

/**
 * One websocket client: who it is, what it holds, and a send path that protects the
 * server from a client that does not read (its buffer is capped; past the cap the
 * socket is closed and the client resumes from its cursor on reconnect).
 */
export class RealtimeConnection {
  readonly id = connectionId();
  readonly connectedAt = new Date();
  /** Where the socket came from, for the admin listing; set by whoever accepts it. */
  remote: { ip: string | null; userAgent: string | null } = { ip: null, userAgent: null };
  caller: Caller = PUBLIC_CALLER;
  /** The token `caller` came from, re-verified periodically; null for the public caller. */
  token: string | null = null;
  /** Set by any frame or pong from the client; cleared at each heartbeat. */
  alive = true;
  closed = false;
  private tokens: number;
  private refilledAt = Date.now();
  /** Serialises message handling, so an `auth` is applied before the `subscribe` sent after it. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly socket: WebSocket,
    private readonly limits: ConnectionLimits,
    private readonly onSlowConsumer: (connection: RealtimeConnection) => void,
  ) {
    this.tokens = limits.messagesPerSecond * 2;
    releaseUpgrade(socket);
  }

  /** Token bucket over incoming messages: false when this one is over the rate. */
  admit(): boolean {
    const now = Date.now();
    const burst = this.limits.messagesPerSecond * 2;
    this.tokens = Math.min(burst, this.tokens + ((now - this.refilledAt) / 1000) * this.limits.messagesPerSecond);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private warnedAt = 0;

  shouldWarnRateLimit(): boolean {
    const now = Date.now();
    if (now - this.warnedAt < 1000) return false;
    this.warnedAt = now;
    return true;
  }

  /** The presence key: the user's id, so one user on several tabs shows as one key. */
  get presenceKey(): string {
    return isUser(this.caller) ? this.caller.uid : this.id;
  }

  send(frame: ServerFrame): void {
    this.sendText(JSON.stringify(frame));
  }

  /**
   * Sends an already serialised text frame. Fan-out encodes a frame once and hands the same
   * Buffer to every socket it goes to (a server never masks, so nothing writes into it).
   */
  sendText(text: string | Buffer): void {
    if (this.closed || this.socket.readyState !== this.socket.OPEN) return;
    this.socket.send(text, { binary: false });
    this.limits.onMessage?.();
    if (this.socket.bufferedAmount > this.limits.sendBufferBytes) this.onSlowConsumer(this);
  }

  /**
   * Holds writes back until uncork(), so the frames one change-feed batch makes for this
   * socket leave in one system call: under a burst the batches grow and the cost per frame
   * falls, where one write per frame would keep it at a syscall each.
   */
  cork(): void {
    rawSocket(this.socket)?.cork();
  }

  uncork(): void {
    rawSocket(this.socket)?.uncork();
  }

  /** An `error` frame; the error's `details` (e.g. `limit`, `field`) travel with it as in HTTP errors. */
  sendError(error: unknown, extra: Record<string, unknown> = {}): void {
    const appError = isAppError(error) ? error : new AppError('INTERNAL');
    this.send({
      type: 'error',
      ...extra,
      code: appError.code,
      message: appError.message,
      ...(appError.details !== undefined ? { details: appError.details } : {}),
    });
  }

  sendErrorCode(code: ErrorCode, message: string, extra: Record<string, unknown> = {}): void {
    this.sendError(new AppError(code, message), extra);
  }

  /** Runs message handlers one after another; a failing handler never blocks the next. */
  enqueue(work: () => Promise<void>): void {
    this.queue = this.queue.then(work).catch(() => undefined);
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.socket.close(code, reason);
    } catch {
      this.socket.terminate();
    }
    // A client that does not read will not complete the closing handshake either.
    setTimeout(() => this.socket.terminate(), 2_000).unref();
  }
}
