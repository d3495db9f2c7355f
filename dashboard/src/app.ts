import type { RealtimeClient } from '../../client-sdk/src/index.js';
import type { Api } from './api.js';

export interface Context {
  api: Api;
  /** The SDK's realtime connection, authenticated with the service key. */
  realtime: RealtimeClient;
  params: Record<string, string>;
  query: URLSearchParams;
  navigate(path: string, options?: { replace?: boolean }): void;
  notify(message: string, kind?: 'info' | 'error'): void;
}

export interface Page {
  element: HTMLElement;
  /** Stops timers and sockets when the page is left. */
  dispose?(): void;
}

export type PageFactory = (ctx: Context) => Promise<Page> | Page;

/** The dashboard's base path: every route lives below it. */
export const BASE = '/_/';

export function link(path: string): string {
  return `${BASE}${path.replace(/^\//, '')}`;
}

/** Shows an action's error in the page's notification area and keeps the page usable. */
export function reportError(ctx: Context, error: unknown): void {
  ctx.notify(error instanceof Error ? error.message : String(error), 'error');
}
