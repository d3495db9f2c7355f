import { asc, eq } from 'drizzle-orm';
import type { QueuedJob } from '../functions/runner.js';
import { topics } from '../../db/schema.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { runQuery } from '../../internal/repository.js';

/** The job queue's schema (pg-boss, see functions/dispatcher.ts). */
const JOBS = 'basalt_jobs.job';
const QUEUES = 'basalt_jobs.queue';

/** A function subscribed to a topic, as live when the publish commits. */
export interface Subscriber {
  name: string;
  version: number;
  options: Record<string, unknown>;
}

/** A subscriber's jobs of a publish: its queue and its jobs' retry and expiry policy. */
export interface SubscriberJobs {
  /** The subscriber, at the version its jobs are pinned to. */
  function: string;
  version: number;
  /** The subscriber's queue. */
  name: string;
  retryLimit: number;
  retryDelay: number;
  expireInSeconds: number;
}

/** One event of a publish, ready to queue for every subscriber. */
export interface QueuedEvent {
  /** What each subscriber's job carries besides its function, version and publish-order number. */
  data: { event: unknown; origin: unknown };
  key: string | null;
  delaySeconds: number;
}

/**
 * A publish's outcome: committed, with the queues that took a job; or not, because the
 * subscribers it was given are not the live ones (here they are) or a queue is missing.
 */
export type PublishOutcome =
  { published: true; queues: string[] } | { published: false; live: Subscriber[]; missingQueues: string[] };

export interface TopicRow {
  name: string;
  rules: { publish?: string };
  createdAt: Date;
  updatedAt: Date;
}

export interface QueueCounts {
  depth: number;
  dead: number;
}

/**
 * Topics and the queue statements of events. Events are jobs of their subscribers' queues
 * (pg-boss's tables), written by hand here because a publish needs what pg-boss does not
 * offer: the insert in the publish's own transaction, with the publish order of the key.
 */
export class EventsRepository {
  constructor(private readonly db: Database) {}

  /** Functions subscribed to any topic (no lock): for the topic list. */
  async allSubscribers(): Promise<Array<Subscriber & { topic: string }>> {
    return runQuery(
      this.db.pool,
      `SELECT name, version, options, options->>'topic' AS topic FROM basalt.function_active
        WHERE kind = 'event' ORDER BY name`,
    );
  }

  /**
   * Publishes in one statement (one round trip, its own transaction): locks the functions
   * live on `topic` against a deploy or undeploy until it commits (an undeploy then
   * dead-letters the events queued before it, as for triggers), and inserts one job per
   * subscriber and event, each event with its own publish-order number (in the order of
   * `events`), only if `subscribers` are exactly those functions at those versions and every
   * queue exists. Otherwise nothing is inserted, and the caller publishes again with the live
   * subscribers it gets back, after creating the queues named missing. Each event is sent
   * once, not once per subscriber: the statement builds every subscriber's job of it.
   */
  async publish(topic: string, subscribers: SubscriberJobs[], events: QueuedEvent[]): Promise<PublishOutcome> {
    // None expected: only the check (the job queue's tables may not even exist yet).
    if (subscribers.length === 0) {
      const live = await runQuery<Subscriber>(
        this.db.pool,
        `SELECT name, version, options FROM basalt.function_active
          WHERE kind = 'event' AND options->>'topic' = $1 ORDER BY name`,
        [topic],
      );
      return live.length === 0 ? { published: true, queues: [] } : { published: false, live, missingQueues: [] };
    }
    // The jobs carry the publish's trace in their data: no origin to tag (a transaction) for.
    const rows = await this.db.withoutOrigin(() =>
      runQuery<{ ok: boolean; live: Subscriber[] | null; missing: string[]; queued: string[] }>(
        this.db.pool,
        {
          name: 'basalt-events-publish',
          text: `WITH live AS MATERIALIZED (
           SELECT name, version, options FROM basalt.function_active
            WHERE kind = 'event' AND options->>'topic' = $1
            ORDER BY name FOR SHARE
         ), expected AS MATERIALIZED (
           SELECT * FROM json_to_recordset($2::json)
             AS s(function text, version integer, name text, expire integer, retry_limit integer, retry_delay integer)
         ), missing AS MATERIALIZED (
           SELECT e.name FROM expected e WHERE NOT EXISTS (SELECT 1 FROM ${QUEUES} q WHERE q.name = e.name)
         ), ready AS MATERIALIZED (
           SELECT (SELECT count(*) FROM live) = (SELECT count(*) FROM expected)
              AND NOT EXISTS (SELECT 1 FROM expected e
                               WHERE NOT EXISTS (SELECT 1 FROM live l WHERE l.name = e.function AND l.version = e.version))
              AND NOT EXISTS (SELECT 1 FROM missing) AS ok
         ), events AS MATERIALIZED (
           -- Publish-order numbers taken in the order of the list, only when the jobs go in.
           SELECT e.value->'data' AS data, e.value->>'key' AS key, (e.value->>'delay')::integer AS delay,
                  nextval('basalt.event_order') AS seq
             FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, n)
            WHERE (SELECT ok FROM ready)
            ORDER BY e.n
         ), inserted AS (
           INSERT INTO ${JOBS} (id, name, data, priority, start_after, singleton_key, expire_in, keep_until,
                                retry_limit, retry_delay, retry_backoff, policy)
           SELECT gen_random_uuid(), s.name,
                  e.data || jsonb_build_object('function', s.function, 'version', s.version, 'seq', e.seq), 0,
                  now() + make_interval(secs => e.delay), e.key, s.expire * interval '1 second',
                  now() + make_interval(secs => e.delay) + interval '14 days',
                  s.retry_limit, s.retry_delay, true, q.policy
             FROM events e
             CROSS JOIN expected s
             JOIN ${QUEUES} q ON q.name = s.name
           RETURNING name
         )
         SELECT (SELECT ok FROM ready) AS ok,
                -- Only a refused publish needs the live subscribers (to publish again with).
                CASE WHEN (SELECT ok FROM ready) THEN NULL
                     ELSE (SELECT coalesce(json_agg(live ORDER BY name), '[]'::json) FROM live) END AS live,
                (SELECT coalesce(array_agg(name), '{}') FROM missing) AS missing,
                (SELECT coalesce(array_agg(DISTINCT name), '{}') FROM inserted) AS queued`,
        },
        [
          topic,
          JSON.stringify(
            subscribers.map((fn) => ({
              function: fn.function,
              version: fn.version,
              name: fn.name,
              expire: fn.expireInSeconds,
              retry_limit: fn.retryLimit,
              retry_delay: fn.retryDelay,
            })),
          ),
          JSON.stringify(events.map((event) => ({ data: event.data, key: event.key, delay: event.delaySeconds }))),
        ],
      ),
    );
    const row = rows[0];
    if (!row?.ok) return { published: false, live: row?.live ?? [], missingQueues: row?.missing ?? [] };
    return { published: true, queues: row.queued };
  }

  /**
   * Takes up to `limit` jobs of an event queue, as pg-boss's fetch does, except that of the
   * jobs with one key only the first in publish order is taken, and only while no other of
   * that key runs: a key's events run one at a time, in order, also across instances and
   * through retries (a failed event waits for its retry, and holds back those after it).
   * Under SKIP LOCKED a concurrent fetch that skips a key's first job still sees it unrun in
   * its snapshot, so it does not take the second.
   */
  async fetchInKeyOrder<T>(queue: string, limit: number): Promise<Array<QueuedJob<T>>> {
    // Not a named (prepared) statement: after five runs Postgres may switch a prepared
    // statement to a generic plan, planned without knowing the queue (pg-boss partitions the
    // job table by queue name). With 20,000 jobs waiting such fetches took 14–34 s each and
    // stalled the queue; planned each time with its parameters, they take milliseconds.
    return runQuery(
      this.db.pool,
      `WITH next AS (
           SELECT j.id FROM ${JOBS} j
            WHERE j.name = $1 AND j.state < 'active' AND j.start_after < now()
              AND (j.singleton_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM ${JOBS} o
                 WHERE o.name = $1 AND o.singleton_key = j.singleton_key AND o.state <= 'active' AND o.id <> j.id
                   AND (o.state = 'active' OR (o.data->>'seq')::bigint < (j.data->>'seq')::bigint)))
            ORDER BY j.priority DESC, j.created_on, (j.data->>'seq')::bigint, j.id
            LIMIT $2
            FOR UPDATE OF j SKIP LOCKED
         )
         UPDATE ${JOBS} j SET state = 'active', started_on = now(),
                retry_count = CASE WHEN started_on IS NOT NULL THEN retry_count + 1 ELSE retry_count END
           FROM next
          WHERE j.name = $1 AND j.id = next.id
         RETURNING j.id, j.data, j.retry_limit AS "retryLimit", j.retry_count AS "retryCount",
                   j.created_on AS "createdOn"`,
      [queue, limit],
    );
  }

  /**
   * An index for the key check of fetchInKeyOrder on the queue's own table (pg-boss keeps a
   * table per queue), so it reads only a key's unfinished jobs, never the finished ones.
   */
  async indexKeys(queue: string): Promise<void> {
    const rows = await runQuery<{ partition: string }>(
      this.db.pool,
      `SELECT partition_name AS partition FROM ${QUEUES} WHERE name = $1`,
      [queue],
    );
    const partition = rows[0]?.partition;
    // pg-boss names it 'j' and a hex digest: nothing else is ever spliced into the statement.
    if (!partition || !/^j[0-9a-f]{56}$/.test(partition)) return;
    await runQuery(
      this.db.pool,
      `CREATE INDEX IF NOT EXISTS ${partition}_event_keys ON basalt_jobs.${partition}
         (singleton_key, ((data->>'seq')::bigint)) WHERE state <= 'active' AND singleton_key IS NOT NULL`,
    ).catch((error: unknown) => {
      // Two instances creating it at once: one wins, which is all that is needed.
      if (!String((error as Error).message).includes('already exists')) throw error;
    });
  }

  /** Waiting (incl. retrying and delayed) and dead-lettered events of `topic` in each queue. */
  async queueCounts(topic: string, queues: string[]): Promise<Map<string, QueueCounts>> {
    const counts = new Map<string, QueueCounts>();
    if (queues.length === 0) return counts;
    const exists = await runQuery<{ present: boolean }>(
      this.db.pool,
      `SELECT to_regclass('${JOBS}') IS NOT NULL AS present`,
    );
    if (!exists[0]?.present) return counts;
    const rows = await runQuery<{ name: string; depth: string; dead: string }>(
      this.db.pool,
      `SELECT name, count(*) FILTER (WHERE state < 'active') AS depth, count(*) FILTER (WHERE state = 'failed') AS dead
         FROM ${JOBS} WHERE name = ANY($1::text[]) AND data->'event'->>'topic' = $2 GROUP BY name`,
      [queues, topic],
    );
    for (const row of rows) counts.set(row.name, { depth: Number(row.depth), dead: Number(row.dead) });
    return counts;
  }

  async topics(q: Queryable = this.db.pool): Promise<TopicRow[]> {
    return this.db.builder(q).select().from(topics).orderBy(asc(topics.name));
  }

  async topic(name: string): Promise<TopicRow | null> {
    const rows = await this.db.builder().select().from(topics).where(eq(topics.name, name));
    return rows[0] ?? null;
  }

  async saveTopic(tx: Tx, name: string, rules: { publish?: string }): Promise<TopicRow> {
    const rows = await this.db
      .builder(tx)
      .insert(topics)
      .values({ name, rules })
      .onConflictDoUpdate({ target: topics.name, set: { rules, updatedAt: new Date() } })
      .returning();
    const row = rows[0];
    if (!row) throw new Error('the topic was not saved');
    return row;
  }

  async deleteTopic(tx: Tx, name: string): Promise<boolean> {
    const rows = await this.db.builder(tx).delete(topics).where(eq(topics.name, name)).returning({ name: topics.name });
    return rows.length > 0;
  }
}
