import { AppError } from '../../internal/errors.js';

export const MAX_PATH_BYTES = 1024;
const BUCKET_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
// C0 and C1 control characters, DEL included.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Names the storage API uses for itself under /v1/storage/. */
const RESERVED_BUCKET_NAMES = new Set(['uploads']);

export function assertBucketName(name: string): void {
  if (RESERVED_BUCKET_NAMES.has(name)) {
    throw new AppError(
      'INVALID_REQUEST',
      `"${name}" is reserved (/v1/storage/${name} is the resumable upload endpoint).`,
      {
        details: { name },
      },
    );
  }
  if (!BUCKET_NAME.test(name)) {
    throw new AppError(
      'INVALID_REQUEST',
      'A bucket name is 1 to 63 characters of a-z, 0-9, "-" and "_", starting with a letter or digit.',
      { details: { name } },
    );
  }
}

function invalid(reason: string): AppError {
  return new AppError('INVALID_PATH', `The object path is not valid: ${reason}.`);
}

/**
 * Checks a decoded object path and returns its NFC form, the form it is stored and
 * compared in. Rejects what could address something other than one object: empty
 * segments, `.` and `..`, a leading `/`, control characters.
 */
export function normalizeObjectPath(decoded: string): string {
  if (LONE_SURROGATE.test(decoded)) throw invalid('it is not valid UTF-8');
  const path = decoded.normalize('NFC');
  const bytes = Buffer.byteLength(path, 'utf8');
  if (bytes < 1) throw invalid('it is empty');
  if (bytes > MAX_PATH_BYTES) throw invalid(`it is longer than ${MAX_PATH_BYTES} bytes`);
  if (CONTROL.test(path)) throw invalid('it contains a control character');
  if (path.startsWith('/')) throw invalid('it starts with "/"');
  for (const segment of path.split('/')) {
    if (segment === '') throw invalid('it has an empty segment ("//" or a trailing "/")');
    if (segment === '.' || segment === '..') throw invalid('it has a "." or ".." segment');
  }
  return path;
}

/** Decodes a path as it appears in a URL (percent-encoded), then checks it. */
export function objectPathFromUrl(raw: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    throw invalid('its percent-encoding is malformed');
  }
  return normalizeObjectPath(decoded);
}

/**
 * The bucket and the still-encoded object path of a storage URL, read from the raw
 * request URL so that percent-encoded `.`/`..` and `%2F` are judged after one decoding.
 */
export function splitStorageUrl(
  url: string,
  prefix: '/v1/storage/' | '/v1/sign/',
): { bucket: string; rawPath: string } {
  const pathname = url.split('?', 1)[0] ?? '';
  if (!pathname.startsWith(prefix)) throw invalid('the URL is not a storage URL');
  const rest = pathname.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash < 0) throw invalid('it is empty');
  return { bucket: decodeURIComponent(rest.slice(0, slash)), rawPath: rest.slice(slash + 1) };
}

/** A listing prefix: like a path, but may be empty and may end with "/". */
export function normalizePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '') return '';
  if (prefix.endsWith('/')) return `${normalizeObjectPath(prefix.slice(0, -1))}/`;
  return normalizeObjectPath(prefix);
}

/** Encodes each segment of a path for use in a URL. */
export function encodeObjectPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** Matches a MIME type against an allowlist of exact types and `type/*` wildcards. */
export function mimeAllowed(contentType: string, allowed: readonly string[] | null): boolean {
  if (allowed === null || allowed.length === 0) return true;
  const essence = mimeEssence(contentType);
  return allowed.some((pattern) => {
    const p = pattern.toLowerCase();
    if (p === '*/*') return true;
    if (p.endsWith('/*')) return essence.startsWith(p.slice(0, -1));
    return essence === p;
  });
}

/** `type/subtype` in lower case, without parameters. */
export function mimeEssence(contentType: string): string {
  return (contentType.split(';', 1)[0] ?? '').trim().toLowerCase();
}

const MIME = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/([a-z0-9][a-z0-9!#$&^_.+-]{0,126}|\*)$/;

export function assertMimePattern(pattern: string): void {
  if (!MIME.test(pattern.toLowerCase()) || pattern.startsWith('*')) {
    throw new AppError('INVALID_REQUEST', `"${pattern}" is not a MIME type or a "type/*" wildcard.`);
  }
}

// RFC 9110 §5.6.2 token and §5.6.4 quoted-string (obs-text included, as Node passes latin1).
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const QUOTED = '"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"';
const PARAMETER = `(${TOKEN})=(${TOKEN}|${QUOTED})`;
// media-type = type "/" subtype parameters; parameters = *( OWS ";" OWS [ parameter ] ).
// Every repetition needs a ";" and tokens hold no ";" or space, so matching is linear.
const MEDIA_TYPE = new RegExp(`^(${TOKEN})/(${TOKEN})((?:[ \\t]*;[ \\t]*(?:${TOKEN}=(?:${TOKEN}|${QUOTED}))?)*)$`);
const PARAMETERS = new RegExp(PARAMETER, 'g');
// IANA charset names: mime-charset (RFC 2978), at most 40 characters.
const CHARSET = /^[a-z0-9][a-z0-9!#$%&'+^_`{}~-]{0,39}$/;
const MAX_CONTENT_TYPE_LENGTH = 1024;

function invalidContentType(reason: string): AppError {
  return new AppError('INVALID_REQUEST', `The Content-Type is not a valid media type: ${reason}.`, {
    details: { field: 'content-type' },
  });
}

/**
 * The form of a Content-Type that is stored and served: `type/subtype` in lower case plus a
 * valid `charset`, nothing else. Anything that is not one RFC 9110 media type is refused:
 * a list such as `image/png; charset=x, text/html` passes a naive `image/*` check while a
 * browser reads the last type of the list, so it must never be kept as sent. Parameters
 * other than charset (`name=`, `boundary=` …) say nothing a download needs and are dropped.
 * A missing or empty header is `application/octet-stream`.
 */
export function normalizeContentType(header: string | undefined): string {
  if (header === undefined) return 'application/octet-stream';
  const value = header.replace(/^[ \t]+|[ \t]+$/g, '');
  if (value === '') return 'application/octet-stream';
  if (value.length > MAX_CONTENT_TYPE_LENGTH) throw invalidContentType('it is too long');
  const match = MEDIA_TYPE.exec(value);
  if (!match) throw invalidContentType('expected "type/subtype" with optional "; name=value" parameters');
  const essence = `${match[1]}/${match[2]}`.toLowerCase();
  if (!MIME.test(essence) || essence.endsWith('/*')) throw invalidContentType(`"${essence}" is not a type`);
  let charset: string | null = null;
  for (const [, name = '', raw = ''] of (match[3] ?? '').matchAll(PARAMETERS)) {
    if (name.toLowerCase() !== 'charset') continue;
    if (charset !== null) throw invalidContentType('charset is given twice');
    const unquoted = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
    charset = unquoted.toLowerCase();
    if (!CHARSET.test(charset)) throw invalidContentType(`"${unquoted}" is not a charset name`);
  }
  return charset === null ? essence : `${essence}; charset=${charset}`;
}

/**
 * The Content-Type a download is sent with. Stored types are normalized on upload; a row
 * written before that (or by plain SQL) is normalized again here, and one that does not
 * parse is sent as bytes rather than as whatever it claims.
 */
export function servedContentType(stored: string): string {
  try {
    return normalizeContentType(stored);
  } catch {
    return 'application/octet-stream';
  }
}
