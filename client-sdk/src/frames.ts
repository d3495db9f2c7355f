/** Frames on the realtime websocket, as the SDK reads and writes them. */
import { BasaltError, isErrorCode } from './errors.js';

export type Frame = { type: string } & Record<string, unknown>;

/** The BasaltError an `error` frame stands for. */
export function frameError(frame: Frame): BasaltError {
  const code = isErrorCode(frame.code) ? frame.code : 'INTERNAL';
  return new BasaltError(code, typeof frame.message === 'string' ? frame.message : undefined);
}
