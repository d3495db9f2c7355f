/** `basalt.functions`: calls HTTP functions (`ANY /v1/functions/:name`). */
import type { HttpTransport } from './transport.js';

export class FunctionsClient {
  private readonly http: HttpTransport;

  constructor(http: HttpTransport) {
    this.http = http;
  }

  /**
   * Calls the HTTP function `name` with a POST carrying `body` as JSON, with the session's
   * token (refreshed first when due). Resolves with the function's JSON result; rejects with
   * the catalogue's BasaltError (FUNCTION_ERROR, FUNCTION_TIMEOUT, NOT_FOUND, ...). `R` is the
   * result's type as the function defines it: the SDK does not check it.
   */
  invoke<R = unknown>(name: string, body?: unknown): Promise<R> {
    return this.http.request<R>('POST', `/v1/functions/${encodeURIComponent(name)}`, body);
  }
}
