import { randomUUID } from 'node:crypto';
import type { Caller } from '../../internal/caller.js';
import type { Database } from '../../internal/db.js';
import { newTraceId } from '../../internal/trace.js';
import type { AuditEvent } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { AppError } from '../../internal/errors.js';
import { evaluateRule, parseRule, ruleAuthFromCaller, type Root, type Rule } from '../../internal/rules/index.js';
import { parseRuleForSaving } from '../../internal/rules/saving.js';
import type { EventsRepository, QueuedEvent, Subscriber, TopicRow } from './repository.js';

/** Topic names (API.md "Events, queues and usage"). */
export const TOPIC_NAME = /^[a-z][a-z0-9._-]{0,127}$/;
/** The largest payload, as JSON (like SQS and SNS: 256 KiB). docs/limits.md. */
export const MAX_PAYLOAD_BYTES = 256 * 1024;
/** The longest delay of a delivery (like SQS: 15 minutes). docs/events.md. */
export const MAX_DELAY_SECONDS = 900;
/** The longest ordering key. */
export const MAX_KEY_LENGTH = 256;
/** Events one run of a batch function takes at most. */
export const MAX_BATCH_SIZE = 100;
/** Events one publish request (or one ctx.events.publishMany) carries at most. docs/limits.md. */
export const MAX_PUBLISH_BATCH = 1000;
/** The largest body of a publish request, as JSON (a batch's; each payload keeps its own limit). docs/limits.md. */
export const MAX_PUBLISH_BODY_BYTES = 1024 * 1024;

/** An event as a subscribed function receives it (API.md). */
export interface TopicEvent {
  id: string;
  type: 'event';
  topic: string;
  payload: unknown;
  key: string | null;
  published_at: string;
  trace_id: string;
}

/**
 * Where a publish comes from, for traces: the trace it continues and the invocation that
 * published it. Without a trace id the event starts a new trace.
 */
export interface PublishOrigin {
  trace_id?: string;
  parent_invocation_id?: string;
}

export interface PublishOptions {
  key?: string | null;
  delaySeconds?: number;
}

/** How events reach the subscribers' queues: the function dispatcher provides it. */
export interface EventQueues {
  /** Creates the function's queue if it does not exist yet. */
  ensure(fn: { name: string; options: Record<string, unknown> }): Promise<void>;
  /** The queue of a function. */
  queueOf(fn: { name: string }): string;
  /** The retry and expiry policy of a function's jobs, as for its triggers. */
  policy(options: Record<string, unknown>): { retryLimit: number; retryDelay: number; expireInSeconds: number };
  /** Jobs were added to these queues: wake this instance's runners of them. */
  notify(queues: string[]): void;
}

export interface TopicSubscriber {
  function: string;
  version: number;
  batch_size: number | null;
  depth: number;
  dead_letters: number;
}

export interface TopicSummary {
  name: string;
  rules: { publish?: string };
  subscribers: TopicSubscriber[];
  depth: number;
  dead_letters: number;
}

const PUBLISH_RULE_SCOPE = {
  available: new Set<Root>(['auth', 'payload', 'now']),
  describedAs: 'a publish rule',
  hint: 'publish rules see auth, payload and now',
};

export function validTopic(topic: unknown): topic is string {
  return typeof topic === 'string' && TOPIC_NAME.test(topic);
}

function invalid(message: string, field: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field } });
}

/** The publish options of a request body or a ctx.events.publish call, checked. */
export function checkedPublish(
  topic: unknown,
  payload: unknown,
  options: { key?: unknown; delaySeconds?: unknown },
): { topic: string; payload: unknown; key: string | null; delaySeconds: number; size: number } {
  if (!validTopic(topic)) {
    throw invalid('A topic name is a lowercase letter, then up to 127 of a-z, 0-9, ".", "_", "-".', 'topic');
  }
  if (payload === undefined) throw invalid('An event needs a `payload` (any JSON value).', 'payload');
  const size = Buffer.byteLength(JSON.stringify(payload) ?? '', 'utf8');
  if (size > MAX_PAYLOAD_BYTES) {
    throw new AppError('PAYLOAD_TOO_LARGE', `An event's payload is at most ${MAX_PAYLOAD_BYTES} bytes of JSON.`, {
      details: { limit: MAX_PAYLOAD_BYTES },
    });
  }
  const key = options.key ?? null;
  if (key !== null && (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH)) {
    throw invalid(`\`key\` is a string of 1 to ${MAX_KEY_LENGTH} characters.`, 'key');
  }
  const delay = options.delaySeconds ?? 0;
  if (typeof delay !== 'number' || !Number.isInteger(delay) || delay < 0 || delay > MAX_DELAY_SECONDS) {
    throw invalid(`\`delay_seconds\` is an integer from 0 to ${MAX_DELAY_SECONDS}.`, 'delay_seconds');
  }
  return { topic, payload, key, delaySeconds: delay, size };
}

/** One event of a batch publish, as a request body or ctx.events.publishMany gives it. */
export interface BatchEvent {
  payload?: unknown;
  key?: unknown;
  delay_seconds?: unknown;
}

type CheckedEvent = ReturnType<typeof checkedPublish>;

/**
 * The events of a batch publish, each checked as a single publish is; a refusal names the
 * event's index (`details.index`) and refuses the whole batch.
 */
export function checkedBatch(topic: unknown, events: unknown): CheckedEvent[] {
  if (!Array.isArray(events) || events.length === 0 || events.length > MAX_PUBLISH_BATCH) {
    throw invalid(`\`events\` is a list of 1 to ${MAX_PUBLISH_BATCH} events.`, 'events');
  }
  let total = 0;
  return events.map((item: unknown, index) => {
    try {
      if (typeof item !== 'object' || item === null || Array.isArray(item)) {
        throw invalid('An event is an object {payload, key?, delay_seconds?}.', 'events');
      }
      const event = item as BatchEvent;
      const checked = checkedPublish(topic, event.payload, { key: event.key, delaySeconds: event.delay_seconds });
      // A request's body limit bounds an HTTP batch; this bounds ctx.events.publishMany's the same.
      total += checked.size;
      if (total > MAX_PUBLISH_BODY_BYTES) {
        throw new AppError(
          'PAYLOAD_TOO_LARGE',
          `A batch's payloads are at most ${MAX_PUBLISH_BODY_BYTES} bytes of JSON.`,
          {
            details: { limit: MAX_PUBLISH_BODY_BYTES },
          },
        );
      }
      return checked;
    } catch (error) {
      throw withIndex(error, index);
    }
  });
}

/** The same refusal, naming the event of the batch it is about. */
function withIndex(error: unknown, index: number): unknown {
  if (!(error instanceof AppError)) return error;
  return new AppError(error.code, `events[${index}]: ${error.message}`, {
    details: { ...error.details, index },
    headers: error.headers,
  });
}

/**
 * Topics (pub/sub): a publish writes one job per subscribed function into the job queue the
 * triggers use, in one transaction, so an acknowledged event is durable and every subscriber
 * gets it at least once, retried and dead-lettered like a trigger's event.
 */
export class EventsService {
  private readonly rules = new Map<string, Rule>();
  /** The subscribers of each topic as last seen live: a publish checks them in its statement. */
  private readonly subscribers = new Map<string, Subscriber[]>();

  constructor(
    private readonly db: Database,
    private readonly repository: EventsRepository,
    private readonly queues: EventQueues,
    private readonly audit: AuditLog,
  ) {}

  /**
   * Publishes an event (the internal API, used by ctx.events.publish and anything else inside
   * the server that publishes). Returns once the event is committed.
   */
  async publish(
    topic: string,
    payload: unknown,
    options: PublishOptions = {},
    origin: PublishOrigin = {},
  ): Promise<{ id: string }> {
    const [id] = await this.enqueue([checkedPublish(topic, payload, options)], origin);
    return { id: id ?? '' };
  }

  /**
   * Publishes a batch of events to one topic (ctx.events.publishMany): all of them or none, in
   * one transaction, each with its own publish order (the order of the list). Returns their
   * ids, in that order, once they are committed.
   */
  async publishMany(topic: string, events: unknown, origin: PublishOrigin = {}): Promise<{ ids: string[] }> {
    return { ids: await this.enqueue(checkedBatch(topic, events), origin) };
  }

  /** Commits one job per subscriber and event of checked events of one topic, all or none. */
  private async enqueue(checked: CheckedEvent[], origin: PublishOrigin): Promise<string[]> {
    const topic = checked[0]?.topic;
    if (topic === undefined) return [];
    const publishedAt = new Date().toISOString();
    const events: Array<QueuedEvent & { data: { event: TopicEvent } }> = checked.map((each) => {
      const event: TopicEvent = {
        id: `evt_${randomUUID()}`,
        type: 'event',
        topic,
        payload: each.payload,
        key: each.key,
        published_at: publishedAt,
        trace_id: origin.trace_id ?? newTraceId(),
      };
      return {
        data: {
          event,
          origin: { trace_id: event.trace_id, parent_invocation_id: origin.parent_invocation_id ?? null },
        },
        key: each.key,
        delaySeconds: each.delaySeconds,
      };
    });
    // One round trip as a rule: the statement checks the subscribers known here against the
    // live ones, and when they differ (a deploy meanwhile, a first publish) it inserts nothing
    // and hands back the live ones to publish again with.
    let subscribers = this.subscribers.get(topic) ?? [];
    for (let attempt = 0; attempt < 4; attempt++) {
      const outcome = await this.repository.publish(
        topic,
        subscribers.map((fn) => ({
          function: fn.name,
          version: fn.version,
          name: this.queues.queueOf(fn),
          ...this.queues.policy(fn.options),
        })),
        events,
      );
      if (outcome.published) {
        this.notifyWhenDue(outcome.queues, events);
        return events.map((event) => event.data.event.id);
      }
      subscribers = outcome.live;
      this.remember(topic, subscribers);
      // A subscriber deployed a moment ago may not have its queue yet: create it, then publish again.
      for (const fn of subscribers) {
        if (outcome.missingQueues.includes(this.queues.queueOf(fn))) await this.queues.ensure(fn);
      }
    }
    throw new AppError('UNAVAILABLE', 'The queues of the topic are not ready; publish again.');
  }

  /**
   * Wakes this instance's runners of `queues` for the events now due, and for delayed ones when
   * they come due (once per distinct delay) rather than at the runners' next poll.
   */
  private notifyWhenDue(queues: string[], events: Array<{ delaySeconds: number }>): void {
    const delays = new Set(events.map((event) => event.delaySeconds));
    for (const delay of delays) {
      if (delay === 0) this.queues.notify(queues);
      else setTimeout(() => this.queues.notify(queues), delay * 1000 + 10).unref();
    }
  }

  /**
   * `POST /v1/events/:topic`: one event (`{payload, key?, delay_seconds?}`) or a batch
   * (`{events: [...]}`), with the service key or as a caller the topic's publish rule allows
   * for every event of it.
   */
  async publishAs(
    caller: Caller,
    topic: string,
    body: { payload?: unknown; key?: unknown; delay_seconds?: unknown; events?: unknown },
  ): Promise<{ id: string } | { ids: string[] }> {
    if (body.events !== undefined) {
      if (body.payload !== undefined || body.key !== undefined || body.delay_seconds !== undefined) {
        throw invalid(
          'A batch publish carries its events in `events` only (each with its own key and delay_seconds).',
          'events',
        );
      }
      const checked = checkedBatch(topic, body.events);
      await this.authorise(caller, checked, { batch: true });
      return { ids: await this.enqueue(checked, {}) };
    }
    const checked = checkedPublish(topic, body.payload, { key: body.key, delaySeconds: body.delay_seconds });
    await this.authorise(caller, [checked], { batch: false });
    const [id] = await this.enqueue([checked], {});
    return { id: id ?? '' };
  }

  /**
   * The service key may publish anything; another caller only events the topic's publish rule
   * allows, every one of them (a refusal of one, in a batch, names its index).
   */
  private async authorise(caller: Caller, checked: CheckedEvent[], { batch }: { batch: boolean }): Promise<void> {
    const topic = checked[0]?.topic;
    if (caller.role === 'service' || topic === undefined) return;
    const source = (await this.repository.topic(topic))?.rules.publish;
    if (source === undefined) {
      if (caller.role === 'public') throw new AppError('UNAUTHENTICATED', 'Publishing needs a token.');
      throw new AppError('FORBIDDEN', `The topic "${topic}" has no publish rule: only the service key publishes.`);
    }
    const rule = this.rule(source);
    const auth = ruleAuthFromCaller(caller);
    const now = new Date();
    checked.forEach((event, index) => {
      if (evaluateRule(rule, { auth, payload: event.payload, now })) return;
      const refusal =
        caller.role === 'public'
          ? new AppError('UNAUTHENTICATED', 'Publishing to this topic needs a token.')
          : new AppError('FORBIDDEN', `The topic's publish rule does not allow this event.`);
      throw batch ? withIndex(refusal, index) : refusal;
    });
  }

  private remember(topic: string, subscribers: Subscriber[]): void {
    if (!this.subscribers.has(topic) && this.subscribers.size >= 1000) this.subscribers.clear();
    this.subscribers.set(topic, subscribers);
  }

  private rule(source: string): Rule {
    let rule = this.rules.get(source);
    if (!rule) {
      rule = parseRule(source);
      if (this.rules.size >= 1000) this.rules.clear();
      this.rules.set(source, rule);
    }
    return rule;
  }

  /** Every topic that has rules or subscribers, with each subscriber's waiting and dead events. */
  async list(): Promise<TopicSummary[]> {
    const [rows, subscribers] = await Promise.all([this.repository.topics(), this.repository.allSubscribers()]);
    const names = new Set([...rows.map((row) => row.name), ...subscribers.map((fn) => fn.topic)]);
    const summaries: TopicSummary[] = [];
    for (const name of [...names].sort()) {
      summaries.push(
        await this.summary(
          name,
          rows.find((row) => row.name === name) ?? null,
          subscribers.filter((fn) => fn.topic === name),
        ),
      );
    }
    return summaries;
  }

  private async summary(name: string, row: TopicRow | null, subscribers: Subscriber[]): Promise<TopicSummary> {
    const counts = await this.repository.queueCounts(
      name,
      subscribers.map((fn) => this.queues.queueOf(fn)),
    );
    const listed = subscribers.map((fn): TopicSubscriber => {
      const count = counts.get(this.queues.queueOf(fn)) ?? { depth: 0, dead: 0 };
      const batch = fn.options.batch_size;
      return {
        function: fn.name,
        version: fn.version,
        batch_size: typeof batch === 'number' ? batch : null,
        depth: count.depth,
        dead_letters: count.dead,
      };
    });
    return {
      name,
      rules: row?.rules ?? {},
      subscribers: listed,
      depth: listed.reduce((sum, fn) => sum + fn.depth, 0),
      dead_letters: listed.reduce((sum, fn) => sum + fn.dead_letters, 0),
    };
  }

  /**
   * `PUT /v1/admin/topics/:topic {rules: {publish?}}`: the rule is checked as it is saved.
   * Topic changes take the admin event that records them (`audit`, built by the route) and
   * write it in the change's transaction.
   */
  async configure(topic: string, body: { rules?: unknown }, audit?: AuditEvent): Promise<TopicSummary> {
    if (!validTopic(topic)) throw invalid('Not a valid topic name.', 'topic');
    const rules = body.rules ?? {};
    if (typeof rules !== 'object' || rules === null || Array.isArray(rules)) {
      throw invalid('rules: expected {publish?}.', 'rules');
    }
    const saved: { publish?: string } = {};
    for (const [kind, source] of Object.entries(rules)) {
      if (kind !== 'publish') throw invalid(`rules: a topic has a publish rule only (got "${kind}").`, 'rules');
      if (source === null) continue;
      if (typeof source !== 'string') throw invalid('rules.publish: expected a rule (a string) or null.', 'rules');
      parseRuleForSaving('publish', source, PUBLISH_RULE_SCOPE, (text) => this.rule(text));
      saved.publish = source;
    }
    const row = await this.db.transaction(async (tx) => {
      const stored = await this.repository.saveTopic(tx, topic, saved);
      if (audit) await this.audit.record(audit, { tx });
      return stored;
    });
    const subscribers = (await this.repository.allSubscribers()).filter((fn) => fn.topic === topic);
    return this.summary(topic, row, subscribers);
  }

  /** Drops a topic's settings (its rules); the subscribers, which the functions declare, stay. */
  async remove(topic: string, audit?: AuditEvent): Promise<void> {
    const removed =
      validTopic(topic) &&
      (await this.db.transaction(async (tx) => {
        if (!(await this.repository.deleteTopic(tx, topic))) return false;
        if (audit) await this.audit.record(audit, { tx });
        return true;
      }));
    if (!removed) throw new AppError('NOT_FOUND', `No topic "${topic}" with settings.`);
  }
}
