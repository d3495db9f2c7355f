/**
 * Full-text search (docs/documents.md#full-text-search). A collection's search fields are
 * kept by Postgres itself: a generated, stored `tsvector` column ("$search") of the weighted
 * fields with a GIN index on it, so rows written with plain SQL are searchable the moment
 * they commit. Stored rather than an expression index because relevance (ts_rank) reads the
 * vector of every match: from the column it is read, from an expression it was computed
 * again — to_tsvector with stemming per field and matching row, most of a search's time
 * (migration 0028 converted the collections made before).
 *
 * The search text goes through websearch_to_tsquery, which never fails on user input
 * (stray operators and quotes are read as words), as a bind parameter.
 */
import { AppError } from '../../internal/errors.js';
import { parseFieldPath } from './names.js';
import { dataPathExpr, ROW_ALIAS, type SqlParams } from './sql.js';
import type { SearchSettings } from './types.js';

export const SEARCH_LIMITS = { maxFields: 16, maxQueryChars: 1000 } as const;
/** The generated column holding a searchable collection's tsvector. */
export const SEARCH_COLUMN = '$search';
/** Text search configuration names as Postgres spells its built-in ones. */
const LANGUAGE = /^[a-z][a-z_]{0,62}$/;
/** Weights of the first fields; the rest share the lowest. */
const WEIGHTS = ['A', 'B', 'C'];
/** Marks put around matches by ts_headline; characters of Unicode's private use area, stripped from the text first. */
const MARK_START = '\uE000';
const MARK_END = '\uE001';

function invalid(message: string, field: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field } });
}

/** `{fields, language?}` of the admin API (null removes search). The language is checked against the database by the caller. */
export function parseSearchSettings(input: unknown): SearchSettings | null {
  if (input === null) return null;
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw invalid('search: expected {fields: [path, ...], language?} or null.', 'search');
  }
  const { fields, language = 'simple', ...rest } = input as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalid(`search: unknown setting "${unknown}".`, `search.${unknown}`);
  if (!Array.isArray(fields) || fields.length === 0 || fields.length > SEARCH_LIMITS.maxFields) {
    throw invalid(`search.fields: 1 to ${SEARCH_LIMITS.maxFields} field paths.`, 'search.fields');
  }
  const paths = fields.map((path, i) => parseFieldPath(path, `search.fields[${i}]`).join('.'));
  if (new Set(paths).size !== paths.length) throw invalid('search.fields: a field is listed twice.', 'search.fields');
  if (typeof language !== 'string' || !LANGUAGE.test(language)) {
    throw invalid('search.language: a text search configuration name, e.g. simple or english.', 'search.language');
  }
  return { fields: paths, language };
}

function config(settings: SearchSettings): string {
  // Checked by LANGUAGE (and against pg_ts_config when set); a literal so index and query match.
  if (!LANGUAGE.test(settings.language)) throw new Error(`unsafe search language reached SQL: ${settings.language}`);
  return `'${settings.language}'::regconfig`;
}

/** The text of one field (SQL): a string as is, anything else as its JSON text; '' when missing. */
function fieldText(path: string, alias: string | null): string {
  return `coalesce(${dataPathExpr(path.split('.'), alias)} #>> '{}', '')`;
}

/** The weighted tsvector of the search fields: the generated column's expression (and that of live matches). */
export function searchVectorExpr(settings: SearchSettings, alias: string | null = ROW_ALIAS): string {
  const cfg = config(settings);
  return (
    '(' +
    settings.fields
      .map((path, i) => `setweight(to_tsvector(${cfg}, ${fieldText(path, alias)}), '${WEIGHTS[i] ?? 'D'}')`)
      .join(' || ') +
    ')'
  );
}

export interface CompiledSearch {
  /** The match predicate. */
  where: string;
  /** The relevance (higher first). */
  rank: string;
  /** Select expressions of the highlights, one per field, named h0, h1 … */
  highlights: string[];
}

/** Checks a query's `search` text; null when absent. */
export function parseSearchText(input: unknown): string | null {
  if (input === undefined || input === null) return null;
  if (typeof input !== 'string' || input.length > SEARCH_LIMITS.maxQueryChars) {
    throw invalid(`search: a string of at most ${SEARCH_LIMITS.maxQueryChars} characters.`, 'search');
  }
  if (input.includes('\u0000')) throw invalid('search: may not contain NUL.', 'search');
  return input;
}

/** The tsquery of a search text (SQL over `params`). */
export function compileSearchQuery(settings: SearchSettings, text: string, params: SqlParams): string {
  return `websearch_to_tsquery(${config(settings)}, ${params.add(text, 'text')})`;
}

export function compileSearch(
  settings: SearchSettings,
  text: string,
  params: SqlParams,
  highlight: boolean,
): CompiledSearch {
  const cfg = config(settings);
  const query = compileSearchQuery(settings, text, params);
  const vector = `${ROW_ALIAS}."${SEARCH_COLUMN}"`;
  const options = `'StartSel=${MARK_START}, StopSel=${MARK_END}, MaxFragments=2, MaxWords=30, MinWords=10, FragmentDelimiter=" … "'`;
  return {
    where: `(${vector} @@ ${query})`,
    rank: `ts_rank(${vector}, ${query})`,
    highlights: highlight
      ? settings.fields.map((path) => {
          const raw = `translate(${fieldText(path, ROW_ALIAS)}, '${MARK_START}${MARK_END}', '')`;
          return `(CASE WHEN coalesce(jsonb_typeof(${dataPathExpr(path.split('.'))}), 'null') = 'null' THEN NULL ELSE ts_headline(${cfg}, ${raw}, ${query}, ${options}) END)`;
        })
      : [],
  };
}

function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** A headline as HTML: the document's text escaped, Basalt's marks the only markup. */
export function headlineHtml(headline: string): string {
  return escapeHtml(headline).replaceAll(MARK_START, '<mark>').replaceAll(MARK_END, '</mark>');
}

/** `highlights` of a document from the selected headlines (fields the document lacks are left out). */
export function highlightsOf(settings: SearchSettings, headlines: Array<string | null>): Record<string, string> {
  const out: Record<string, string> = {};
  settings.fields.forEach((path, i) => {
    const headline = headlines[i];
    if (typeof headline === 'string') out[path] = headlineHtml(headline);
  });
  return out;
}

/** Whether a query's order_by is absent or empty (a search then orders by relevance). */
export function isEmptyOrderBy(orderBy: unknown): boolean {
  return orderBy === undefined || orderBy === null || (Array.isArray(orderBy) && orderBy.length === 0);
}

/** Where a relevance-ordered page ends: the last document's rank and id. */
export interface RankCursor {
  rank: number;
  id: string;
}

export function encodeRankCursor(rank: number, id: string): string {
  return Buffer.from(JSON.stringify({ r: rank, id }), 'utf8').toString('base64url');
}

export function decodeRankCursor(cursor: unknown, field: 'after' | 'before' = 'after'): RankCursor {
  const bad = () =>
    new AppError('INVALID_REQUEST', `${field}: not a cursor of this search (order_by must stay the same).`, {
      details: { field },
    });
  if (typeof cursor !== 'string' || cursor.length > 1000 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const { r, id } = (parsed ?? {}) as { r?: unknown; id?: unknown };
  if (typeof r !== 'number' || !Number.isFinite(r) || typeof id !== 'string' || id.length > 128) throw bad();
  return { rank: r, id };
}

/**
 * "After the cursor" in relevance order: lower rank, or the same rank and a later id
 * ("before" it: higher rank, or the same rank and an earlier id).
 */
export function compileRankAfter(
  rank: string,
  cursor: RankCursor,
  params: SqlParams,
  side: 'after' | 'before' = 'after',
): string {
  const r = params.add(cursor.rank, 'real');
  const [rankOp, idOp] = side === 'after' ? ['<', '>'] : ['>', '<'];
  return `(${rank} ${rankOp} ${r} OR (${rank} = ${r} AND ${ROW_ALIAS}.id ${idOp} ${params.add(cursor.id, 'text')}))`;
}
