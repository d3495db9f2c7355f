import { AppError } from '../../internal/errors.js';

/**
 * Where mailed links may send the browser back to: one of BASALT_AUTH_REDIRECT_URLS, or
 * any URL on BASALT_PUBLIC_URL's origin.
 */
export class RedirectPolicy {
  /** BASALT_AUTH_REDIRECT_URLS in normalized form, so that they compare with normalized requests. */
  private readonly allowedUrls: ReadonlySet<string>;
  private readonly publicOrigin: string;

  constructor(options: { publicUrl: string; redirectUrls: readonly string[] }) {
    this.publicOrigin = new URL(options.publicUrl).origin;
    this.allowedUrls = new Set(
      options.redirectUrls.flatMap((url) => {
        const normalized = normalizeUrl(url);
        return normalized === null ? [] : [normalized];
      }),
    );
  }

  /**
   * The normalized form of an allowed `redirect_to`, or 400. Only the normalized form is
   * compared and ever sent back: the raw text may hold what a browser or a header would
   * read differently from the URL parser (control characters, backslashes, a fragment).
   */
  allowed(url: string): string {
    const normalized = normalizeUrl(url);
    if (
      normalized === null ||
      !(this.allowedUrls.has(normalized) || new URL(normalized).origin === this.publicOrigin)
    ) {
      throw new AppError('INVALID_REQUEST', '"redirect_to" is not an allowed redirect URL.', {
        details: { field: 'redirect_to' },
      });
    }
    return normalized;
  }

  /** An optional `redirect_to`: null when absent, else as {@link allowed}. */
  target(redirectTo: string | undefined): string | null {
    return redirectTo === undefined ? null : this.allowed(redirectTo);
  }
}

/** A URL's normalized form (as the WHATWG parser writes it, without fragment), or null if it is no http(s) URL. */
function normalizeUrl(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  // Basalt appends the session as the fragment; a fragment of the caller's would swallow it.
  parsed.hash = '';
  return parsed.href;
}
