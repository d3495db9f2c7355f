/**
 * The raw limit: a minimal Fastify + pg server that runs the same SQL as Basalt's documents
 * module for create, get by id and an indexed equality query — and nothing else (no auth, no
 * rules, no validation, no change log, no metrics). What Basalt loses against it is the price
 * of its features. Run in its own process by the harness:
 *   RAW_DATABASE_URL=postgres://... PORT=8090 node --import tsx bench/raw-server.ts
 */
import { randomBytes } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';

const databaseUrl = process.env.RAW_DATABASE_URL;
if (!databaseUrl) throw new Error('RAW_DATABASE_URL is required');
const port = Number(process.env.PORT ?? 8090);

// Same pool size as Basalt's default, so neither side wins by holding more connections.
const pool = new pg.Pool({ connectionString: databaseUrl, max: 20 });

await pool.query(`
  CREATE TABLE IF NOT EXISTS bench (
    id text PRIMARY KEY,
    owner uuid,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL DEFAULT '{}'::jsonb
  )`);
await pool.query(`CREATE INDEX IF NOT EXISTS bench_group_idx ON bench ((data ->> 'group'))`);

const COLUMNS = 'id, owner, version, created_at, updated_at, data';

interface Row {
  id: string;
  owner: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
  data: unknown;
}

const document = (row: Row): Record<string, unknown> => ({ ...row, collection: 'bench' });

const app = Fastify({ logger: false });

app.get('/healthz', async () => ({ status: 'ok' }));

app.post<{ Body: { id?: string; data: unknown } }>('/v1/db/bench', async (request, reply) => {
  const id = request.body.id ?? randomBytes(15).toString('base64url');
  const { rows } = await pool.query<Row>(
    `INSERT INTO bench (id, owner, data) VALUES ($1, $2, $3) RETURNING ${COLUMNS}`,
    [id, null, request.body.data],
  );
  return reply.code(201).send(document(rows[0] as Row));
});

app.get<{ Params: { id: string } }>('/v1/db/bench/:id', async (request, reply) => {
  const { rows } = await pool.query<Row>(`SELECT ${COLUMNS} FROM bench WHERE id = $1`, [request.params.id]);
  const row = rows[0];
  if (!row) return reply.code(404).send({ error: { code: 'NOT_FOUND', message: 'No such document.' } });
  return document(row);
});

// Only the benchmark's query shape: [["group", "==", value]] with a limit.
app.post<{ Body: { where: [[string, string, string]]; limit?: number } }>('/v1/db/bench/query', async (request) => {
  const value = request.body.where[0][2];
  const { rows } = await pool.query<Row>(
    `SELECT ${COLUMNS} FROM bench WHERE data ->> 'group' = $1 ORDER BY id LIMIT $2`,
    [value, request.body.limit ?? 100],
  );
  return { docs: rows.map(document), next_cursor: null };
});

await app.listen({ port, host: '127.0.0.1' });

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void app
      .close()
      .then(() => pool.end())
      .finally(() => process.exit(0));
  });
}
