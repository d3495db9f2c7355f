import { and, asc, desc, eq, sql } from 'drizzle-orm';
import { functionActive, functionDispatchVersions, functionVersions } from '../../db/schema.js';
import { ADVISORY_LOCK_NAMESPACES } from '../../internal/advisory-locks.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../internal/repository.js';
import type { InvocationKind } from './protocol.js';

export type DeploySource = 'api' | 'folder';
export type BundleFormat = 'cjs' | 'esm';

/** What routes an event to a function version: enough to build its events and run it. */
export interface ActivePointer {
  name: string;
  version: number;
  kind: InvocationKind;
  exportName: string;
  options: Record<string, unknown>;
}

/** A stored version without its bundle. */
export interface VersionInfo extends ActivePointer {
  entry: string;
  bundleHash: string;
  bundleFormat: BundleFormat;
  source: DeploySource;
  deployedAt: Date;
}

export interface StoredVersion extends VersionInfo {
  bundle: string;
}

/** A version to store: the next number is taken by the repository. */
export interface NewVersion {
  name: string;
  kind: InvocationKind;
  exportName: string;
  options: Record<string, unknown>;
  entry: string;
  bundle: string;
  bundleFormat: BundleFormat;
  bundleHash: string;
  source: DeploySource;
}

/** The queue schema of pg-boss (dispatcher.ts) and the change-feed consumer of the dispatcher. */
const JOBS = 'basalt_jobs.job';
const DISPATCH_CONSUMER = 'functions';
const EVENT_KINDS = new Set<InvocationKind>(['document', 'object', 'auth']);

const infoColumns = {
  name: functionVersions.name,
  version: functionVersions.version,
  kind: functionVersions.kind,
  exportName: functionVersions.exportName,
  options: functionVersions.options,
  entry: functionVersions.entry,
  bundleHash: functionVersions.bundleHash,
  bundleFormat: functionVersions.bundleFormat,
  source: functionVersions.source,
  deployedAt: functionVersions.deployedAt,
};

function asInfo(row: { kind: string } & Omit<VersionInfo, 'kind'>): VersionInfo {
  return { ...row, kind: row.kind as InvocationKind };
}

/** A change-log row of basalt.function_active (snake_case JSON) as a pointer. */
export function pointerFromRow(row: Record<string, unknown> | null): ActivePointer | null {
  if (!row || typeof row.name !== 'string' || typeof row.version !== 'number') return null;
  return {
    name: row.name,
    version: row.version,
    kind: row.kind as InvocationKind,
    exportName: String(row.export_name),
    options: (row.options ?? {}) as Record<string, unknown>,
  };
}

/** All SQL of deploys: versions, the live pointers, the dispatcher's pointers, and the queue rows a deploy touches. */
export class DeployRepository {
  constructor(private readonly db: Database) {}

  /**
   * Stores a new version and makes it live, in one transaction. With `unlessFolderHash`, nothing
   * is stored when the newest version the folder deployed has that hash (a restart deploys
   * nothing new). An event function's first deploy also starts the dispatcher's cursor, so
   * events committed right after this deploy are dispatched even if no dispatcher ran before.
   */
  /** `alsoInTx` joins the deploy's transaction once the version is stored (its admin event). */
  async deploy(
    version: NewVersion,
    options: { unlessFolderHash?: boolean; alsoInTx?: (tx: Tx) => Promise<void> } = {},
  ): Promise<VersionInfo | null> {
    return this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
        ADVISORY_LOCK_NAMESPACES.functionDeploys,
        version.name,
      ]);
      const builder = this.db.builder(tx);
      if (options.unlessFolderHash) {
        const newest = await mapDatabaseErrors(() =>
          builder
            .select({ hash: functionVersions.bundleHash })
            .from(functionVersions)
            .where(and(eq(functionVersions.name, version.name), eq(functionVersions.source, 'folder')))
            .orderBy(desc(functionVersions.version))
            .limit(1),
        );
        if (newest[0]?.hash === version.bundleHash) return null;
      }
      const [next] = await runQuery<{ version: number }>(
        tx,
        'SELECT coalesce(max(version), 0) + 1 AS version FROM basalt.function_versions WHERE name = $1',
        [version.name],
      );
      const number = next?.version ?? 1;
      if (EVENT_KINDS.has(version.kind)) await this.startDispatchCursor(tx);
      const [row] = await mapDatabaseErrors(() =>
        builder
          .insert(functionVersions)
          .values({ ...version, version: number })
          .returning(infoColumns),
      );
      await this.point(tx, { ...version, version: number });
      await options.alsoInTx?.(tx);
      return row ? asInfo(row) : null;
    });
  }

  /** Makes a stored version live again; null when there is no such version. `alsoInTx` joins its transaction. */
  async rollback(name: string, version: number, alsoInTx?: (tx: Tx) => Promise<void>): Promise<VersionInfo | null> {
    return this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
        ADVISORY_LOCK_NAMESPACES.functionDeploys,
        name,
      ]);
      const rows = await mapDatabaseErrors(() =>
        this.db
          .builder(tx)
          .select(infoColumns)
          .from(functionVersions)
          .where(and(eq(functionVersions.name, name), eq(functionVersions.version, version))),
      );
      const row = rows[0];
      if (!row) return null;
      const info = asInfo(row);
      if (EVENT_KINDS.has(info.kind)) await this.startDispatchCursor(tx);
      await this.point(tx, info);
      await alsoInTx?.(tx);
      return info;
    });
  }

  /**
   * Takes a function out of service; false when it was not deployed. `alsoInTx` joins its
   * transaction when it was.
   */
  async undeploy(name: string, alsoInTx?: (tx: Tx) => Promise<void>): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await mapDatabaseErrors(() =>
        this.db
          .builder(tx)
          .delete(functionActive)
          .where(eq(functionActive.name, name))
          .returning({ name: functionActive.name }),
      );
      if (rows.length === 0) return false;
      await alsoInTx?.(tx);
      return true;
    });
  }

  private async point(tx: Tx, pointer: ActivePointer): Promise<void> {
    const values = {
      name: pointer.name,
      version: pointer.version,
      kind: pointer.kind,
      exportName: pointer.exportName,
      options: pointer.options,
    };
    await mapDatabaseErrors(() =>
      this.db
        .builder(tx)
        .insert(functionActive)
        .values({ ...values, id: pointer.name })
        .onConflictDoUpdate({ target: functionActive.name, set: { ...values, changedAt: sql`now()` } }),
    );
  }

  /**
   * Starts the dispatcher's cursor at the newest tick when it has none, with the pointers
   * live at that moment: the deploy in progress commits after that tick, so the dispatcher
   * meets it in the log in its place among the writes around it.
   */
  private async startDispatchCursor(tx: Tx): Promise<void> {
    const created = await runQuery(
      tx,
      `INSERT INTO basalt.change_consumers (name, tick_id)
       SELECT $1, coalesce(max(id), 0) FROM basalt.change_ticks
       ON CONFLICT (name) DO NOTHING RETURNING name`,
      [DISPATCH_CONSUMER],
    );
    if (created.length > 0) await this.copyLivePointers(tx);
  }

  private async copyLivePointers(q: Queryable): Promise<void> {
    await runQuery(
      q,
      `DELETE FROM basalt.function_dispatch_versions;
       INSERT INTO basalt.function_dispatch_versions (name, version, kind, export_name, options)
       SELECT name, version, kind, export_name, options FROM basalt.function_active`,
    );
  }

  /** The hash of the newest version each name deployed from this folder file has (empty: none). */
  async folderHashes(entry: string): Promise<string[]> {
    const rows = await runQuery<{ hash: string }>(
      this.db.pool,
      `SELECT DISTINCT ON (name) bundle_hash AS hash FROM basalt.function_versions
        WHERE source = 'folder' AND entry = $1 ORDER BY name, version DESC`,
      [entry],
    );
    return rows.map((row) => row.hash);
  }

  async versions(name: string): Promise<VersionInfo[]> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select(infoColumns)
        .from(functionVersions)
        .where(eq(functionVersions.name, name))
        .orderBy(desc(functionVersions.version)),
    );
    return rows.map(asInfo);
  }

  async version(name: string, version: number): Promise<StoredVersion | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select({ ...infoColumns, bundle: functionVersions.bundle })
        .from(functionVersions)
        .where(and(eq(functionVersions.name, name), eq(functionVersions.version, version))),
    );
    const row = rows[0];
    return row ? { ...asInfo(row), bundle: row.bundle } : null;
  }

  /** The live version of every deployed function, without bundles. */
  async active(): Promise<VersionInfo[]> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select(infoColumns)
        .from(functionActive)
        .innerJoin(
          functionVersions,
          and(eq(functionVersions.name, functionActive.name), eq(functionVersions.version, functionActive.version)),
        )
        .orderBy(asc(functionActive.name)),
    );
    return rows.map(asInfo);
  }

  /** A short fingerprint of what is live, read every few seconds to catch anything the feed missed. */
  async activeFingerprint(): Promise<string> {
    const [row] = await runQuery<{ fingerprint: string | null }>(
      this.db.pool,
      `SELECT string_agg(name || '@' || version, ',' ORDER BY name) AS fingerprint FROM basalt.function_active`,
    );
    return row?.fingerprint ?? '';
  }

  async hasVersions(name: string): Promise<boolean> {
    const rows = await runQuery(this.db.pool, 'SELECT 1 FROM basalt.function_versions WHERE name = $1 LIMIT 1', [name]);
    return rows.length > 0;
  }

  /** The pointers as of the dispatcher's saved cursor. */
  async dispatchPointers(q: Queryable = this.db.pool): Promise<ActivePointer[]> {
    const rows = await mapDatabaseErrors(() => this.db.builder(q).select().from(functionDispatchVersions));
    return rows.map((row) => ({ ...row, kind: row.kind as InvocationKind }));
  }

  /** The dispatcher's first start: its pointers are the live ones. */
  async resetDispatchPointers(q: Queryable = this.db.pool): Promise<ActivePointer[]> {
    await this.copyLivePointers(q);
    return this.dispatchPointers(q);
  }

  /** Saves the dispatcher's pointers for these names (null: undeployed), with its cursor. */
  async saveDispatchPointers(tx: Tx, changed: Map<string, ActivePointer | null>): Promise<void> {
    for (const [name, pointer] of changed) {
      if (!pointer) {
        await this.db.builder(tx).delete(functionDispatchVersions).where(eq(functionDispatchVersions.name, name));
        continue;
      }
      const values = {
        name,
        version: pointer.version,
        kind: pointer.kind,
        exportName: pointer.exportName,
        options: pointer.options,
      };
      await this.db
        .builder(tx)
        .insert(functionDispatchVersions)
        .values(values)
        .onConflictDoUpdate({ target: functionDispatchVersions.name, set: values });
    }
  }

  /**
   * Dead-letters the events still waiting in an undeployed function's queue, recording a
   * dead invocation for each, so the admin retry can queue them again once it is redeployed.
   */
  async deadLetterQueue(tx: Tx, queue: string, functionName: string): Promise<number> {
    const rows = await runQuery<{ count: string }>(
      tx,
      `WITH dead AS (
         UPDATE ${JOBS} SET state = 'failed', completed_on = now(),
                output = jsonb_build_object('message', 'the function was undeployed')
          WHERE name = $1 AND state IN ('created', 'retry')
          RETURNING id, data, retry_count
       ), recorded AS (
         INSERT INTO basalt.function_invocations (function_name, trigger, event_id, status, attempt, job_id, error)
         SELECT $2, coalesce(data->'event'->>'type', 'event'), data->'event'->>'id', 'dead', retry_count + 1, id,
                'the function was undeployed before this event ran'
           FROM dead
         RETURNING 1
       )
       SELECT count(*) AS count FROM recorded`,
      [queue, functionName],
    );
    return Number(rows[0]?.count ?? 0);
  }

  /** Spends every retry left of these jobs, so failing them dead-letters them (their function is gone). */
  async spendRetries(tx: Tx, queue: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await runQuery(tx, `UPDATE ${JOBS} SET retry_limit = retry_count WHERE name = $1 AND id = ANY($2::uuid[])`, [
      queue,
      ids,
    ]);
  }

  /**
   * A dead job and the others its run took (a batch: failing, each recorded the run's id),
   * pinned to `version`, the one live now: a retried event runs that, not the one it was
   * first dispatched to. Returns their ids.
   */
  async repinDeadRun(queue: string, jobId: string, invocationId: string, version: number): Promise<string[]> {
    const rows = await runQuery<{ id: string }>(
      this.db.pool,
      `UPDATE ${JOBS} SET data = jsonb_set(data, '{version}', to_jsonb($4::int))
        WHERE name = $1 AND state = 'failed' AND (id = $2::uuid OR output->>'invocation_id' = $3)
        RETURNING id`,
      [queue, jobId, invocationId, version],
    );
    return rows.map((row) => row.id);
  }
}
