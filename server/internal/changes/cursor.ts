import { AppError } from '../errors.js';

/**
 * A cursor names a tick of the change log: "everything up to and including tick N". Tick
 * ids live in Postgres, so a cursor means the same on every instance. The version prefix
 * lets the format change later without old cursors being misread.
 */
const CURSOR_PATTERN = /^v1\.([0-9a-z]{1,11})$/;

export function formatCursor(tick: number): string {
  return `v1.${tick.toString(36)}`;
}

/** The tick a cursor names; INVALID_REQUEST when it is not a cursor Basalt issued. */
export function parseCursor(cursor: unknown): number {
  const match = typeof cursor === 'string' ? CURSOR_PATTERN.exec(cursor) : null;
  const tick = match ? parseInt(match[1] ?? '', 36) : NaN;
  if (!Number.isSafeInteger(tick) || tick < 0) {
    throw new AppError('INVALID_REQUEST', 'The cursor is malformed.', { details: { field: 'cursor' } });
  }
  return tick;
}

/** Orders two cursors: negative when `a` is before `b`. Both must be well-formed. */
export function compareCursors(a: string, b: string): number {
  return parseCursor(a) - parseCursor(b);
}
