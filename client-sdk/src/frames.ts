/** Frames on the realtime websocket, as the SDK reads and writes them. */
import { BasaltError, isErrorCode, type ErrorDetails } from './errors.js';

export type Frame = { type: string } & Record<string, unknown>;

/** The BasaltError an `error` frame stands for. */
export function frameError(frame: Frame): BasaltError {
  const code = isErrorCode(frame.code) ? frame.code : 'INTERNAL';
  const details = frame.details;
  return new BasaltError(code, typeof frame.message === 'string' ? frame.message : undefined, {
    ...(typeof details === 'object' && details !== null && !Array.isArray(details)
      ? { details: details as ErrorDetails }
      : {}),
  });
}
