import { randomUUID } from 'node:crypto';
import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import type { RealtimeConnection } from './connection.js';
import { MAX_NOTIFY_BYTES, type PresenceRow, type RealtimeRepository } from './repository.js';

/** A presence as clients see it: `ref` is unique per tracked join, `key` groups a user's tabs. */
export interface PresenceEntry {
  ref: string;
  key: string;
  payload: unknown;
}

/** What travels between instances through pg_notify (short keys: the payload limit is 8000 bytes). */
type Notice =
  | { t: 'b'; c: string; e: string; p: unknown; s: string }
  | { t: 'p'; c: string; j: PresenceEntry[]; l: PresenceEntry[] };

interface Member {
  connection: RealtimeConnection;
  presenceRef: string | null;
  presencePayload: unknown;
  /** Presence notices that arrive while the joiner's initial state is being read. */
  pending: Notice[] | null;
  /**
   * The ref of the member's own presence while the notice of its first join is on its way:
   * the initial state already shows it, so the notice must not show it a second time.
   */
  echo: string | null;
}

/** Largest presence payload accepted by `join`, so that one entry always fits a notification. */
export const MAX_PRESENCE_BYTES = 4096;

function toEntry(row: PresenceRow): PresenceEntry {
  return { ref: row.ref, key: row.key, payload: row.payload };
}

/**
 * Channels: broadcast and presence across every instance on one database. Broadcasts
 * are carried by pg_notify (all instances LISTEN); presence lives in a table with the
 * owning instance's heartbeat, so a crashed instance's presences are swept by another
 * and announced as leaves. Every frame, local ones included, goes through the
 * notification, so all members see one order.
 *
 * The heartbeat (which also sweeps dead instances) runs only while this instance has a member
 * in some channel: at rest it makes no query. Others may then take this instance for dead and
 * remove its row, which holds nothing; the first join after a pause beats (and sweeps) before
 * it reads or writes presence.
 */
export class ChannelHub {
  readonly instanceId = randomUUID();
  private readonly channels = new Map<string, Map<string, Member>>();
  /** The channels each connection has joined, by connection id: the per-socket limit counts these. */
  private readonly joinedBy = new Map<string, Set<string>>();
  /**
   * The presences this instance's members were told of, per channel with local members:
   * after the listener was away (notifications sent meanwhile are lost), the difference
   * between this and the table is what they missed.
   */
  private readonly known = new Map<string, Map<string, PresenceEntry>>();
  private timer: NodeJS.Timeout | null = null;
  private readonly heartbeatMs: number;
  private readonly maxChannelsPerConnection: number;
  private lastBeat = 0;
  private stopped = false;

  constructor(
    private readonly repo: RealtimeRepository,
    private readonly log: Logger,
    options: { heartbeatMs: number; maxChannelsPerConnection: number },
  ) {
    this.heartbeatMs = options.heartbeatMs;
    this.maxChannelsPerConnection = options.maxChannelsPerConnection;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.repo.beat(this.instanceId);
    this.lastBeat = Date.now();
  }

  /** Beats while some connection of this instance is in a channel, not otherwise. */
  private syncHeartbeat(): void {
    const wanted = !this.stopped && this.channels.size > 0;
    if (wanted && !this.timer) {
      this.timer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
      this.timer.unref();
    } else if (!wanted && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const gone = await this.repo.removeInstance(this.instanceId).catch((error: unknown) => {
      this.log.warn({ err: error }, 'could not remove realtime presences on shutdown');
      return [];
    });
    await this.announceLeaves(gone);
  }

  /** The channels one connection has joined, and whether it tracks a presence there (admin listing). */
  channelsOf(connectionId: string): Array<{ channel: string; presence: boolean }> {
    const joined: Array<{ channel: string; presence: boolean }> = [];
    for (const channel of this.joinedBy.get(connectionId) ?? []) {
      const member = this.channels.get(channel)?.get(connectionId);
      if (member) joined.push({ channel, presence: member.presenceRef !== null });
    }
    return joined;
  }

  get memberCount(): number {
    let count = 0;
    for (const members of this.channels.values()) count += members.size;
    return count;
  }

  async join(connection: RealtimeConnection, channel: string, presence: unknown): Promise<void> {
    if (presence !== undefined && Buffer.byteLength(JSON.stringify(presence)) > MAX_PRESENCE_BYTES) {
      throw new AppError('PAYLOAD_TOO_LARGE', `A presence payload may be at most ${MAX_PRESENCE_BYTES} bytes.`);
    }
    // Each joined channel costs memory here and, with a presence, a row every instance reads:
    // one socket must not be able to hold them without bound. A connection's messages are
    // handled one at a time, so the count cannot be raced past. Joining again (to replace a
    // presence) takes no new place.
    let joined = this.joinedBy.get(connection.id);
    if (!joined?.has(channel) && (joined?.size ?? 0) >= this.maxChannelsPerConnection) {
      throw new AppError(
        'INVALID_REQUEST',
        `A connection may be joined to at most ${this.maxChannelsPerConnection} channels; leave one first.`,
        { details: { limit: this.maxChannelsPerConnection } },
      );
    }
    if (!joined) {
      joined = new Set();
      this.joinedBy.set(connection.id, joined);
    }
    joined.add(channel);
    // After a pause: this instance's row again, and dead instances' presences swept, before
    // presence is read or written.
    if (Date.now() - this.lastBeat > this.heartbeatMs) await this.heartbeat();
    let members = this.channels.get(channel);
    if (!members) {
      members = new Map();
      this.channels.set(channel, members);
    }
    let member = members.get(connection.id);
    const first = member === undefined;
    if (!member) {
      member = { connection, presenceRef: null, presencePayload: null, pending: [], echo: null };
      members.set(connection.id, member);
    }
    this.syncHeartbeat();
    if (presence !== undefined) {
      const ref = member.presenceRef ?? randomUUID();
      const entry: PresenceEntry = { ref, key: connection.presenceKey, payload: presence };
      await this.repo.insertPresence(this.instanceId, { ...entry, channel });
      member.presenceRef = ref;
      member.presencePayload = presence;
      if (first) member.echo = ref;
      await this.notify({ t: 'p', c: channel, j: [entry], l: [] });
    }
    if (first) {
      try {
        const state = await this.repo.channelPresence(channel);
        if (!this.known.has(channel)) this.known.set(channel, new Map(state.map((row) => [row.ref, toEntry(row)])));
        connection.send({ type: 'presence', channel, joins: state.map(toEntry), leaves: [] });
      } finally {
        const pending = member.pending ?? [];
        member.pending = null;
        for (const notice of pending) this.deliver(member, notice);
      }
    }
    connection.send({ type: 'joined', channel, ...(member.presenceRef ? { presence_ref: member.presenceRef } : {}) });
  }

  async leave(connection: RealtimeConnection, channel: string): Promise<void> {
    const member = this.removeMember(channel, connection.id);
    this.forget(connection.id, channel);
    if (member) {
      this.syncHeartbeat();
      if (member.presenceRef) await this.announceLeaves(await this.repo.deletePresences([member.presenceRef]));
    }
    connection.send({ type: 'left', channel });
  }

  /** Sends to the channel's other members; with `ackId`, answers the sender `sent` once it is on its way. */
  async broadcast(
    connection: RealtimeConnection,
    channel: string,
    event: string,
    payload: unknown,
    ackId?: string,
  ): Promise<void> {
    if (!this.channels.get(channel)?.has(connection.id)) {
      throw new AppError('INVALID_REQUEST', `Join channel "${channel}" before broadcasting to it.`);
    }
    const notice: Notice = { t: 'b', c: channel, e: event, p: payload, s: connection.id };
    const text = JSON.stringify(notice);
    if (Buffer.byteLength(text) > MAX_NOTIFY_BYTES) {
      throw new AppError('PAYLOAD_TOO_LARGE', `A broadcast may carry at most about ${MAX_NOTIFY_BYTES - 200} bytes.`, {
        details: { limit: MAX_NOTIFY_BYTES - 200 },
      });
    }
    await this.repo.notify(text);
    if (ackId !== undefined) connection.send({ type: 'sent', id: ackId, channel });
  }

  /** A connection went away: leave every channel it was in, announcing its presences. */
  async disconnect(connection: RealtimeConnection): Promise<void> {
    const refs: string[] = [];
    const joined = this.joinedBy.get(connection.id) ?? new Set<string>();
    this.joinedBy.delete(connection.id);
    for (const channel of joined) {
      const member = this.removeMember(channel, connection.id);
      if (member?.presenceRef) refs.push(member.presenceRef);
    }
    this.syncHeartbeat();
    if (refs.length > 0) await this.announceLeaves(await this.repo.deletePresences(refs));
  }

  /** Takes a connection out of a channel (which goes when it was the last member); returns the member it was. */
  private removeMember(channel: string, connectionId: string): Member | undefined {
    const members = this.channels.get(channel);
    const member = members?.get(connectionId);
    if (!members || !member) return undefined;
    members.delete(connectionId);
    if (members.size === 0) {
      this.channels.delete(channel);
      this.known.delete(channel);
    }
    return member;
  }

  private forget(connectionId: string, channel: string): void {
    const joined = this.joinedBy.get(connectionId);
    joined?.delete(channel);
    if (joined?.size === 0) this.joinedBy.delete(connectionId);
  }

  /** A notification from any instance (this one included). */
  handleNotification(text: string): void {
    let notice: Notice;
    try {
      notice = JSON.parse(text) as Notice;
    } catch {
      return;
    }
    const members = this.channels.get(notice.c);
    if (!members) return;
    if (notice.t === 'p') {
      const known = this.known.get(notice.c);
      for (const entry of notice.j) known?.set(entry.ref, entry);
      for (const entry of notice.l) known?.delete(entry.ref);
    }
    for (const member of members.values()) this.deliver(member, notice);
  }

  /**
   * After the LISTEN connection was lost: re-announce our presences (others may have swept
   * them), then tell local members the joins and leaves whose notifications were sent while
   * the listener was away.
   */
  resync(): void {
    void this.heartbeat().then(() => this.catchUp());
  }

  private async catchUp(): Promise<void> {
    for (const [channel, members] of this.channels) {
      let rows: PresenceRow[];
      try {
        rows = await this.repo.channelPresence(channel);
      } catch (error) {
        this.log.warn({ err: error, channel }, 'could not re-read presence after reconnecting');
        continue;
      }
      const known = this.known.get(channel) ?? new Map<string, PresenceEntry>();
      const current = new Map(rows.map((row) => [row.ref, toEntry(row)]));
      const joins = [...current.values()].filter((entry) => !known.has(entry.ref));
      const leaves = [...known.values()].filter((entry) => !current.has(entry.ref));
      if (!this.channels.has(channel)) continue;
      this.known.set(channel, current);
      if (joins.length === 0 && leaves.length === 0) continue;
      const notice: Notice = { t: 'p', c: channel, j: joins, l: leaves };
      for (const member of members.values()) this.deliver(member, notice);
    }
  }

  private deliver(member: Member, notice: Notice): void {
    if (notice.t === 'b') {
      if (notice.s === member.connection.id) return;
      member.connection.send({ type: 'broadcast', channel: notice.c, event: notice.e, payload: notice.p });
      return;
    }
    if (member.pending) {
      member.pending.push(notice);
      return;
    }
    let joins = notice.j;
    if (member.echo !== null && joins.some((entry) => entry.ref === member.echo)) {
      joins = joins.filter((entry) => entry.ref !== member.echo);
      member.echo = null;
      if (joins.length === 0 && notice.l.length === 0) return;
    }
    member.connection.send({ type: 'presence', channel: notice.c, joins, leaves: notice.l });
  }

  private async heartbeat(): Promise<void> {
    try {
      const known = await this.repo.beat(this.instanceId);
      this.lastBeat = Date.now();
      if (!known) await this.retrack();
      const gone = await this.repo.sweepDeadInstances(this.heartbeatMs * 3);
      await this.announceLeaves(gone);
    } catch (error) {
      this.log.warn({ err: error }, 'realtime presence heartbeat failed');
    }
  }

  /** This instance was taken for dead (a long pause); put its presences back and announce them. */
  private async retrack(): Promise<void> {
    for (const [channel, members] of this.channels) {
      for (const member of members.values()) {
        if (!member.presenceRef) continue;
        const entry: PresenceEntry = {
          ref: member.presenceRef,
          key: member.connection.presenceKey,
          payload: member.presencePayload,
        };
        await this.repo.insertPresence(this.instanceId, { ...entry, channel });
        await this.notify({ t: 'p', c: channel, j: [entry], l: [] });
      }
    }
  }

  private async announceLeaves(rows: PresenceRow[]): Promise<void> {
    const byChannel = new Map<string, PresenceEntry[]>();
    for (const row of rows) {
      const list = byChannel.get(row.channel) ?? [];
      list.push(toEntry(row));
      byChannel.set(row.channel, list);
    }
    for (const [channel, entries] of byChannel) {
      // Several leaves share a notification as long as it stays under the pg_notify limit.
      let chunk: PresenceEntry[] = [];
      for (const entry of entries) {
        const next = [...chunk, entry];
        if (
          chunk.length > 0 &&
          Buffer.byteLength(JSON.stringify({ t: 'p', c: channel, j: [], l: next })) > MAX_NOTIFY_BYTES
        ) {
          await this.notify({ t: 'p', c: channel, j: [], l: chunk });
          chunk = [entry];
        } else {
          chunk = next;
        }
      }
      if (chunk.length > 0) await this.notify({ t: 'p', c: channel, j: [], l: chunk });
    }
  }

  private async notify(notice: Notice): Promise<void> {
    await this.repo.notify(JSON.stringify(notice));
  }
}
