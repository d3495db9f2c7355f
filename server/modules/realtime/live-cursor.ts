import { formatCursor, parseCursor } from '../../internal/changes/cursor.js';
import { AppError } from '../../internal/errors.js';
import type { FeedChange } from './live-sources.js';

/** A realtime position: a feed cursor, or one inside a tick ("through the first n changes of this table in tick t"). */
export interface Position {
  tick: number;
  /** Changes of this subscription's table already delivered from tick `tick + 1`. */
  skip: number;
}

export function positionCursor(position: Position): string {
  return position.skip === 0
    ? formatCursor(position.tick)
    : `${formatCursor(position.tick)}.${position.skip.toString(36)}`;
}

export function parsePosition(cursor: string): Position {
  const dot = cursor.lastIndexOf('.');
  const parts = cursor.split('.');
  if (parts.length === 3) {
    const skip = parseInt(parts[2] ?? '', 36);
    if (!Number.isSafeInteger(skip) || skip <= 0 || !/^[0-9a-z]{1,6}$/.test(parts[2] ?? '')) {
      throw new AppError('INVALID_REQUEST', 'The cursor is malformed.', { details: { field: 'resume_from' } });
    }
    return { tick: parseCursor(cursor.slice(0, dot)), skip };
  }
  try {
    return { tick: parseCursor(cursor), skip: 0 };
  } catch {
    throw new AppError('INVALID_REQUEST', 'The cursor is malformed.', { details: { field: 'resume_from' } });
  }
}

/** The tick of a feed cursor, 0 for one that does not parse. */
export function safeTick(cursor: string): number {
  try {
    return parseCursor(cursor);
  } catch {
    return 0;
  }
}

/** A change routed to a subscription, with the cursor a client resumes from after it. */
export interface RoutedChange {
  change: FeedChange;
  cursor: string;
}

/**
 * Gives each change (all of one table, in commit order) the cursor to resume from after
 * it: the tick's own cursor after its last change, else a position inside the tick.
 */
export function routeChanges(changes: FeedChange[], skipTick: number, skip: number): RoutedChange[] {
  const routed: RoutedChange[] = [];
  let index = 0;
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i] as FeedChange;
    const previous = changes[i - 1];
    if (!previous || previous.tick !== change.tick) index = change.tick === skipTick + 1 ? skip : 0;
    index++;
    const next = changes[i + 1];
    const lastOfTick = !next || next.tick !== change.tick;
    routed.push({
      change,
      cursor: lastOfTick ? formatCursor(change.tick) : positionCursor({ tick: change.tick - 1, skip: index }),
    });
  }
  return routed;
}
