import { randomUUID } from 'node:crypto';

/** One function's figures in one window. */
export interface FunctionUsage {
  invocations: number;
  errors: number;
  coldStarts: number;
  durationMs: number;
  gbSeconds: number;
}

/** What the meter counted since the previous take: the figures of one window inside one hour. */
export interface UsageWindow {
  /** The start of the hour the window lies in. */
  hour: Date;
  functions: Map<string, FunctionUsage>;
  documentReads: number;
  documentWrites: number;
  storageBytesIn: number;
  storageBytesOut: number;
  /** Whether objects were stored or removed in the window (the stored total is measured again). */
  storageChanged: boolean;
  realtimeMessages: number;
  /** The most websockets open at once on this instance in the window. */
  peakConnections: number;
  activeUsers: Set<string>;
}

const HOUR_MS = 3_600_000;

export function hourStart(at: number): Date {
  return new Date(Math.floor(at / HOUR_MS) * HOUR_MS);
}

/**
 * The pay-per-use meter of one instance: plain in-memory counters that the hot paths bump
 * (a number added, at most one map lookup), taken and written to Postgres as per-hour rows
 * by the usage flusher every few seconds. Nothing here does I/O.
 */
export class UsageMeter {
  /** Names this instance among those adding to the same hour (its connection peak). */
  readonly instanceId = randomUUID();
  private windowStart = Date.now();
  private functions = new Map<string, FunctionUsage>();
  private documentReads = 0;
  private documentWrites = 0;
  private storageBytesIn = 0;
  private storageBytesOut = 0;
  private storageChanged = false;
  private realtimeMessages = 0;
  private connections = 0;
  private peakConnections = 0;
  private activeUsers = new Set<string>();

  functionRun(name: string, failed: boolean, cold: boolean, durationMs: number, memoryMb: number): void {
    let figures = this.functions.get(name);
    if (figures === undefined) {
      figures = { invocations: 0, errors: 0, coldStarts: 0, durationMs: 0, gbSeconds: 0 };
      this.functions.set(name, figures);
    }
    figures.invocations += 1;
    if (failed) figures.errors += 1;
    if (cold) figures.coldStarts += 1;
    figures.durationMs += durationMs;
    figures.gbSeconds += (durationMs / 1000) * (memoryMb / 1024);
  }

  documentsRead(count: number): void {
    this.documentReads += count;
  }

  documentsWritten(count: number): void {
    this.documentWrites += count;
  }

  storageIn(bytes: number): void {
    this.storageBytesIn += bytes;
    this.storageChanged = true;
  }

  storageOut(bytes: number): void {
    this.storageBytesOut += bytes;
  }

  storageRemoved(): void {
    this.storageChanged = true;
  }

  realtimeMessage(): void {
    this.realtimeMessages += 1;
  }

  connectionOpened(): void {
    this.connections += 1;
    if (this.connections > this.peakConnections) this.peakConnections = this.connections;
  }

  connectionClosed(): void {
    this.connections -= 1;
  }

  /** A user whose authenticated request succeeded (or who signed in). */
  activeUser(userId: string): void {
    this.activeUsers.add(userId);
  }

  /**
   * Hands over what was counted since the last take and starts a new window. The flusher
   * takes at every hour boundary too, so a window never spans two hours.
   */
  take(now = Date.now()): UsageWindow {
    const window: UsageWindow = {
      hour: hourStart(this.windowStart),
      functions: this.functions,
      documentReads: this.documentReads,
      documentWrites: this.documentWrites,
      storageBytesIn: this.storageBytesIn,
      storageBytesOut: this.storageBytesOut,
      storageChanged: this.storageChanged,
      realtimeMessages: this.realtimeMessages,
      peakConnections: this.peakConnections,
      activeUsers: this.activeUsers,
    };
    this.windowStart = now;
    this.functions = new Map();
    this.documentReads = 0;
    this.documentWrites = 0;
    this.storageBytesIn = 0;
    this.storageBytesOut = 0;
    this.storageChanged = false;
    this.realtimeMessages = 0;
    this.peakConnections = this.connections;
    this.activeUsers = new Set();
    return window;
  }

  /** Puts back a window whose write failed, so the next flush writes it with the new counts. */
  giveBack(window: UsageWindow): void {
    for (const [name, figures] of window.functions) {
      const current = this.functions.get(name);
      if (current === undefined) this.functions.set(name, figures);
      else {
        current.invocations += figures.invocations;
        current.errors += figures.errors;
        current.coldStarts += figures.coldStarts;
        current.durationMs += figures.durationMs;
        current.gbSeconds += figures.gbSeconds;
      }
    }
    this.documentReads += window.documentReads;
    this.documentWrites += window.documentWrites;
    this.storageBytesIn += window.storageBytesIn;
    this.storageBytesOut += window.storageBytesOut;
    this.storageChanged ||= window.storageChanged;
    this.realtimeMessages += window.realtimeMessages;
    this.peakConnections = Math.max(this.peakConnections, window.peakConnections);
    for (const user of window.activeUsers) this.activeUsers.add(user);
  }
}

/** Whether a window has anything to write. */
export function isEmptyWindow(window: UsageWindow): boolean {
  return (
    window.functions.size === 0 &&
    window.documentReads === 0 &&
    window.documentWrites === 0 &&
    window.storageBytesIn === 0 &&
    window.storageBytesOut === 0 &&
    !window.storageChanged &&
    window.realtimeMessages === 0 &&
    window.peakConnections === 0 &&
    window.activeUsers.size === 0
  );
}
