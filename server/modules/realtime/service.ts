import type { WebSocket } from 'ws';
import type { RealtimeConfig } from '../../config.js';
import { isUser, PUBLIC_CALLER, type Caller, type TokenVerifier } from '../../internal/caller.js';
import { AppError, isAppError, isUnavailableError } from '../../internal/errors.js';
import { resolveCaller } from '../../internal/http/request-context.js';
import type { Logger } from '../../internal/log.js';
import type { Metrics } from '../../internal/metrics.js';
import { ChannelHub } from './channels.js';
import {
  CLOSE_GOING_AWAY,
  CLOSE_SLOW_CONSUMER,
  CLOSE_TRY_AGAIN_LATER,
  parseClientMessage,
  RealtimeConnection,
  RefusedMessage,
  type ClientMessage,
} from './connection.js';
import { NotificationListener } from '../../internal/notification-listener.js';
import { REALTIME_NOTIFY_CHANNEL, RealtimeRepository } from './repository.js';
import type { ChangeFeedLike, LiveDocuments } from './live-sources.js';
import { SubscriptionManager, type LiveSubscriptionInfo } from './subscription-manager.js';
import type { Database } from '../../internal/db.js';
import type { UsageMeter } from '../usage/meter.js';

export interface RealtimeDeps {
  config: RealtimeConfig;
  databaseUrl: string;
  serviceKey: string;
  db: Database;
  log: Logger;
  metrics: Metrics;
  /** Counts messages and connections (docs/usage.md). */
  usage?: Pick<UsageMeter, 'realtimeMessage' | 'connectionOpened' | 'connectionClosed'>;
  tokenVerifier: TokenVerifier;
  /** What live queries read: the change feed and the documents module. */
  live: { feed: ChangeFeedLike; documents: LiveDocuments };
}

/** One open websocket of this instance, as `GET /v1/admin/realtime` lists it. */
export interface RealtimeConnectionInfo {
  id: string;
  role: Caller['role'];
  uid: string | null;
  connected_at: string;
  ip: string | null;
  user_agent: string | null;
  subscriptions: LiveSubscriptionInfo[];
  channels: Array<{ channel: string; presence: boolean }>;
}

/**
 * The realtime endpoint's logic: the websocket protocol, per-connection auth (with
 * periodic re-verification so expiry and revocation stop delivery), heartbeats, live
 * queries and channels. Fastify-free; routes.ts hands it each accepted socket.
 */
export class RealtimeService {
  private readonly connections = new Set<RealtimeConnection>();
  private readonly channels: ChannelHub;
  private readonly listener: NotificationListener;
  private subscriptions: SubscriptionManager | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private authTimer: NodeJS.Timeout | null = null;
  private checkingTokens = false;
  private readonly connectionGauge;
  /** One bound function for every connection, so counting a frame allocates nothing. */
  private readonly countMessage = (): void => this.deps.usage?.realtimeMessage();
  private readonly subscriptionGauge;
  private readonly slowConsumers;

  constructor(private readonly deps: RealtimeDeps) {
    const repo = new RealtimeRepository(deps.db);
    this.channels = new ChannelHub(repo, deps.log, {
      heartbeatMs: deps.config.presenceHeartbeatMs,
      maxChannelsPerConnection: deps.config.maxChannelsPerSocket,
    });
    this.listener = new NotificationListener({
      url: deps.databaseUrl,
      channel: REALTIME_NOTIFY_CHANNEL,
      applicationName: 'basalt-realtime-listen',
      log: deps.log,
      onMessage: (payload) => this.channels.handleNotification(payload),
      onReconnect: () => this.channels.resync(),
    });
    this.connectionGauge = deps.metrics.gauge('basalt_realtime_connections', 'Open realtime websockets.');
    this.subscriptionGauge = deps.metrics.gauge('basalt_realtime_subscriptions', 'Live queries held by clients.');
    this.slowConsumers = deps.metrics.counter(
      'basalt_realtime_slow_consumers_total',
      'Websockets closed because they did not read fast enough.',
    );
  }

  async start(): Promise<void> {
    await this.channels.start();
    await this.listener.start();
    const { heartbeatMs, authCheckMs } = this.deps.config;
    this.heartbeatTimer = setInterval(() => this.heartbeat(), heartbeatMs);
    this.heartbeatTimer.unref();
    this.authTimer = setInterval(() => void this.checkTokens(), authCheckMs);
    this.authTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.authTimer) clearInterval(this.authTimer);
    for (const connection of this.connections) connection.close(CLOSE_GOING_AWAY, 'server shutting down');
    this.subscriptions?.stop();
    await this.channels.stop();
    await this.listener.stop();
  }

  /**
   * The connections of this instance with what each holds now. Per instance: behind a
   * load balancer each instance lists its own sockets (the id says which one answered).
   */
  describe(): { instance_id: string; connections: RealtimeConnectionInfo[] } {
    const connections = [...this.connections]
      .filter((connection) => !connection.closed)
      .map((connection) => ({
        id: connection.id,
        role: connection.caller.role,
        uid: isUser(connection.caller) ? connection.caller.uid : null,
        connected_at: connection.connectedAt.toISOString(),
        ip: connection.remote.ip,
        user_agent: connection.remote.userAgent,
        subscriptions: this.subscriptions?.describe(connection.id) ?? [],
        channels: this.channels.channelsOf(connection.id),
      }))
      .sort((a, b) => a.connected_at.localeCompare(b.connected_at));
    return { instance_id: this.channels.instanceId, connections };
  }

  /**
   * The live-query manager, made on the first subscription: it follows the change feed from
   * the feed's position at that moment, so not before the feed has started.
   */
  private live(): SubscriptionManager {
    this.subscriptions ??= new SubscriptionManager(
      this.deps.live.feed,
      this.deps.live.documents,
      this.deps.log,
      this.deps.config.maxSubscriptions,
      this.deps.config.aggregateIntervalMs,
    );
    return this.subscriptions;
  }

  /** Takes over an accepted websocket. Handlers are attached synchronously so no frame is missed. */
  accept(
    socket: WebSocket,
    initialToken: string | null,
    remote: { ip: string | null; userAgent: string | null } = { ip: null, userAgent: null },
  ): void {
    const limits = {
      sendBufferBytes: this.deps.config.sendBufferBytes,
      messagesPerSecond: this.deps.config.messagesPerSecond,
      onMessage: this.countMessage,
    };
    const connection = new RealtimeConnection(socket, limits, (slow) => {
      this.slowConsumers.inc();
      this.deps.log.info({ connection: slow.id }, 'closing slow realtime consumer');
      slow.close(CLOSE_SLOW_CONSUMER, 'slow consumer');
    });
    connection.remote = remote;
    this.connections.add(connection);
    this.connectionGauge.set(this.connections.size);
    this.deps.usage?.connectionOpened();

    socket.on('message', (data, isBinary) => {
      connection.alive = true;
      this.countMessage();
      if (!connection.admit()) {
        // Answering every dropped message would itself flood; say it once per second at most.
        if (connection.shouldWarnRateLimit()) {
          connection.sendErrorCode('RATE_LIMITED', 'Too many messages; some were dropped. Slow down.');
        }
        return;
      }
      if (isBinary) {
        connection.sendErrorCode('INVALID_REQUEST', 'Messages must be JSON text frames.');
        return;
      }
      const text = Array.isArray(data)
        ? Buffer.concat(data).toString('utf8')
        : Buffer.from(data as ArrayBuffer).toString('utf8');
      let message: ClientMessage;
      try {
        message = parseClientMessage(text);
      } catch (error) {
        connection.sendError(error, error instanceof RefusedMessage ? error.concerns : {});
        return;
      }
      if (message.type === 'ping') {
        connection.send({ type: 'pong' });
        return;
      }
      if (message.type === 'pong') return;
      connection.enqueue(() => this.handle(connection, message));
    });
    socket.on('pong', () => {
      connection.alive = true;
    });
    socket.on('close', () => void this.closed(connection));
    socket.on('error', (error) => {
      this.deps.log.debug({ err: error }, 'realtime socket error');
    });

    if (initialToken !== null) connection.enqueue(() => this.authenticate(connection, initialToken));
  }

  private async closed(connection: RealtimeConnection): Promise<void> {
    connection.closed = true;
    if (!this.connections.delete(connection)) return;
    this.connectionGauge.set(this.connections.size);
    this.deps.usage?.connectionClosed();
    this.subscriptions?.dropAll(connection);
    this.subscriptionGauge.set(this.subscriptions?.count ?? 0);
    await this.channels.disconnect(connection).catch((error: unknown) => {
      this.deps.log.warn({ err: error }, 'could not remove presences of a closed connection');
    });
  }

  private async handle(connection: RealtimeConnection, message: ClientMessage): Promise<void> {
    if (connection.closed) return;
    const context: Record<string, unknown> =
      'id' in message ? { id: message.id } : 'channel' in message ? { channel: message.channel } : {};
    try {
      switch (message.type) {
        case 'auth':
          await this.authenticate(connection, message.access_token);
          break;
        case 'subscribe':
          await this.live().subscribe(connection, message);
          break;
        case 'unsubscribe':
          this.subscriptions?.unsubscribe(connection, message.id);
          break;
        case 'join':
          await this.channels.join(connection, message.channel, message.presence);
          break;
        case 'leave':
          await this.channels.leave(connection, message.channel);
          break;
        case 'broadcast':
          await this.channels.broadcast(connection, message.channel, message.event, message.payload, message.id);
          break;
        default:
          break;
      }
    } catch (error) {
      if (message.type === 'subscribe' && isUnavailableError(error)) {
        // Postgres is unreachable: a live query cannot start. Closing (rather than an error
        // frame, which ends the subscription for good) has the client reconnect with backoff
        // and subscribe again, from its cursor if it had one.
        this.deps.log.warn(
          { reason: error instanceof Error ? error.message : String(error) },
          'realtime subscribe unavailable',
        );
        connection.close(CLOSE_TRY_AGAIN_LATER, 'service unavailable; reconnect and resume');
        return;
      }
      if (!isAppError(error) || error.status >= 500) this.deps.log.error({ err: error }, 'realtime message failed');
      connection.sendError(error, context);
    } finally {
      this.subscriptionGauge.set(this.subscriptions?.count ?? 0);
    }
  }

  /** Applies a token (or null to sign out). A bad token leaves the connection as it was and says why. */
  private async authenticate(connection: RealtimeConnection, token: string | null): Promise<void> {
    let caller: Caller;
    try {
      caller =
        token === null
          ? PUBLIC_CALLER
          : await resolveCaller(token, { serviceKey: this.deps.serviceKey, tokenVerifier: this.deps.tokenVerifier });
    } catch (error) {
      connection.sendError(isAppError(error) ? error : new AppError('UNAUTHENTICATED'));
      return;
    }
    const before = connection.caller;
    connection.caller = caller;
    connection.token = token;
    connection.send({ type: 'authenticated', role: caller.role, ...(isUser(caller) ? { uid: caller.uid } : {}) });
    if (!sameIdentity(before, caller)) this.subscriptions?.callerChanged(connection);
  }

  /** Drops clients that answered no ping since the last beat: at most two intervals of silence. */
  private heartbeat(): void {
    for (const connection of this.connections) {
      if (!connection.alive) {
        connection.closed = true;
        connection.socket.terminate();
        continue;
      }
      connection.alive = false;
      try {
        connection.socket.ping();
      } catch {
        connection.socket.terminate();
      }
    }
  }

  /**
   * Re-verifies every user token: expired or revoked sessions stop receiving, with an error.
   * One connection after another: verifying all at once would hold a pending call per
   * socket (10,000 sockets, 10,000 frames every second), enough to push them out of the
   * young heap and grow the process by megabytes a second while it sits idle. A round that
   * outlasts the interval is not overlapped by the next.
   */
  private async checkTokens(): Promise<void> {
    if (this.checkingTokens) return;
    this.checkingTokens = true;
    try {
      const verifier = this.deps.tokenVerifier;
      const now = Date.now() / 1000;
      for (const connection of this.connections) {
        const caller = connection.caller;
        const token = connection.token;
        if (!isUser(caller) || token === null || connection.closed) continue;
        let reason: string | null = null;
        if (caller.expiresAt <= now) reason = 'The access token expired; send a fresh one with an "auth" message.';
        else {
          try {
            await verifier.verify(token);
          } catch (error) {
            // Postgres unreachable (a restart): the session cannot be checked, which is not
            // a revocation. Nothing is delivered meanwhile (the change feed reads Postgres
            // too), and the next round, a second later, checks again.
            if (isUnavailableError(error)) continue;
            reason = 'The session was revoked or the token is no longer valid.';
          }
        }
        // Another auth message may have replaced the token while verifying.
        if (reason === null || connection.token !== token) continue;
        this.revoke(connection, reason);
      }
    } finally {
      this.checkingTokens = false;
    }
  }

  private revoke(connection: RealtimeConnection, reason: string): void {
    connection.caller = PUBLIC_CALLER;
    connection.token = null;
    const dropped = this.subscriptions?.dropAll(connection) ?? [];
    this.subscriptionGauge.set(this.subscriptions?.count ?? 0);
    connection.sendErrorCode('UNAUTHENTICATED', reason);
    for (const subscription of dropped) connection.sendErrorCode('UNAUTHENTICATED', reason, { id: subscription.id });
  }
}

function sameIdentity(a: Caller, b: Caller): boolean {
  if (a.role !== b.role) return false;
  if (isUser(a) && isUser(b)) return a.uid === b.uid && JSON.stringify(a.claims) === JSON.stringify(b.claims);
  return true;
}
