/**
 * What the todo example needs on a Basalt server: one collection and one bucket with their
 * rules, made through the admin API with the service key. Safe to run again: existing ones
 * are brought back to this definition (rules, schema, limits), nothing else is touched.
 */

/** The collection of todo items. Prefixed so it cannot collide with an app's own `todos`. */
export const EXAMPLE_COLLECTION = {
  name: 'example_todos',
  rules: {
    // Everyone signed in (anonymous guests too) sees the shared list.
    read: 'auth != null',
    create: 'auth != null && incoming.owner == auth.uid',
    // Only the author of an item may change or remove it.
    update: 'auth != null && doc.owner == auth.uid',
    delete: 'auth != null && doc.owner == auth.uid',
  },
  schema: {
    type: 'object',
    properties: {
      title: { type: 'string', minLength: 1, maxLength: 200 },
      done: { type: 'boolean' },
      author: { type: 'string', maxLength: 80 },
      image: { type: 'string', maxLength: 300 },
    },
    required: ['title', 'done'],
    additionalProperties: false,
  },
} as const;

/**
 * Pictures attached to items. Public, so an `<img>` can show them without a token (paths
 * hold a random part, so nobody lists or guesses them); writes follow the rules.
 */
export const EXAMPLE_BUCKET = {
  name: 'example-images',
  public: true,
  max_file_size: 5 * 1024 * 1024,
  allowed_mime_types: ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif'],
  rules: {
    write: 'auth != null && object.owner == auth.uid',
    delete: 'auth != null && object.owner == auth.uid',
  },
} as const;

export type SetupOutcome = 'created' | 'updated';

export interface SetupResult {
  collection: SetupOutcome;
  bucket: SetupOutcome;
}

export class SetupError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'SetupError';
  }
}

async function call(
  baseUrl: string,
  serviceKey: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${baseUrl.replace(/\/+$/, '')}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${serviceKey}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

function describeFailure(what: string, status: number, body: unknown): SetupError {
  const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const reason = error ? `${error.code ?? 'ERROR'}: ${error.message ?? ''}` : `HTTP ${status}`;
  const hint = status === 401 || status === 403 ? ' (is the service key the one this Basalt server uses?)' : '';
  return new SetupError(`could not set up ${what}: ${reason}${hint}`, status);
}

/** Creates the resource, or updates it when it exists (also when another run created it meanwhile). */
async function upsert(
  baseUrl: string,
  serviceKey: string,
  kind: 'collections' | 'buckets',
  name: string,
  create: Record<string, unknown>,
  update: Record<string, unknown>,
): Promise<SetupOutcome> {
  const what = `the ${kind === 'collections' ? 'collection' : 'bucket'} ${name}`;
  const existing = await call(baseUrl, serviceKey, 'GET', `/v1/admin/${kind}/${name}`);
  if (existing.status === 404) {
    const created = await call(baseUrl, serviceKey, 'POST', `/v1/admin/${kind}`, create);
    if (created.status === 201) return 'created';
    if (created.status !== 409) throw describeFailure(what, created.status, created.body);
  } else if (existing.status !== 200) {
    throw describeFailure(what, existing.status, existing.body);
  }
  const patched = await call(baseUrl, serviceKey, 'PATCH', `/v1/admin/${kind}/${name}`, update);
  if (patched.status !== 200) throw describeFailure(what, patched.status, patched.body);
  return 'updated';
}

/** Makes (or brings up to date) the example's collection and bucket on the server at `baseUrl`. */
export async function setupExample(baseUrl: string, serviceKey: string): Promise<SetupResult> {
  const { name: collectionName, ...collectionFields } = EXAMPLE_COLLECTION;
  const { name: bucketName, ...bucketFields } = EXAMPLE_BUCKET;
  const collection = await upsert(
    baseUrl,
    serviceKey,
    'collections',
    collectionName,
    EXAMPLE_COLLECTION,
    collectionFields,
  );
  const bucket = await upsert(baseUrl, serviceKey, 'buckets', bucketName, EXAMPLE_BUCKET, bucketFields);
  return { collection, bucket };
}
