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

// The table and the statements are those of Basalt's documents repository (basalt_data tables,
// "C"-collated ids, jsonb paths matched against an expression index), minus its triggers: no
// stamping of version and times, no change log.
await pool.query(`
  CREATE TABLE IF NOT EXISTS bench (
    id text COLLATE "C" PRIMARY KEY,
    owner text COLLATE "C",
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL DEFAULT '{}'::jsonb
  )`);
await pool.query(`CREATE INDEX IF NOT EXISTS bench_group_idx ON bench ((data #> '{group}'))`);

const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const COLUMNS =
  `d.id, d.owner, d.version, to_char(d.created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, ` +
  `to_char(d.updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at, d.data`;

interface Row {
  id: string;
  owner: string | null;
  version: string;
  created_at: string;
  updated_at: string;
  data: unknown;
}

const document = (row: Row): Record<string, unknown> => ({
  id: row.id,
  collection: 'bench',
  owner: row.owner,
  version: Number(row.version),
  created_at: row.created_at,
  updated_at: row.updated_at,
  data: row.data,
});

/** Firestore-style 20-character id, as Basalt generates. */
function generateId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let id = '';
  for (const byte of randomBytes(40)) {
    if (byte >= 248) continue;
    id += alphabet[byte % 62];
    if (id.length === 20) return id;
  }
  return generateId();
}

const app = Fastify({ logger: false });

app.get('/healthz', async () => ({ status: 'ok' }));

app.post<{ Body: { id?: string; data: unknown } }>('/v1/db/bench', async (request, reply) => {
  const id = request.body.id ?? generateId();
  const { rows } = await pool.query<Row>(
    `INSERT INTO bench AS d (id, owner, data) VALUES ($1, $2, $3::jsonb) RETURNING ${COLUMNS}`,
    [id, null, JSON.stringify(request.body.data)],
  );
  return reply.code(201).send(document(rows[0] as Row));
});

app.get<{ Params: { id: string } }>('/v1/db/bench/:id', async (request, reply) => {
  const { rows } = await pool.query<Row>(`SELECT ${COLUMNS} FROM bench d WHERE d.id = $1`, [request.params.id]);
  const row = rows[0];
  if (!row) return reply.code(404).send({ error: { code: 'NOT_FOUND', message: 'No such document.' } });
  return document(row);
});

// Only the benchmark's query shape: [["group", "==", value]] with a limit.
app.post<{ Body: { where: [[string, string, string]]; limit?: number } }>('/v1/db/bench/query', async (request) => {
  const value = request.body.where[0][2];
  const { rows } = await pool.query<Row>(
    `SELECT ${COLUMNS} FROM bench d WHERE (d.data #> '{group}') = $1::jsonb ORDER BY d.id ASC LIMIT $2::int`,
    [JSON.stringify(value), request.body.limit ?? 100],
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
