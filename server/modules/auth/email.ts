import { AppError } from '../../internal/errors.js';

const LOCAL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Trims, lower-cases the domain (the local part is case-sensitive by the RFC, though
 * uniqueness ignores case), and validates a plain `local@domain` address. Throws
 * INVALID_REQUEST naming the field.
 */
export function normalizeEmail(raw: string, field = 'email'): string {
  const email = raw.trim().normalize('NFC');
  const at = email.lastIndexOf('@');
  const invalid = () =>
    new AppError('INVALID_REQUEST', `"${field}" is not a valid email address.`, { details: { field } });
  if (at <= 0 || at === email.length - 1 || email.length > 254) throw invalid();
  const local = email.slice(0, at);
  const domain = email.slice(at + 1).toLowerCase();
  if (local.length > 64 || !LOCAL.test(local) || local.startsWith('.') || local.endsWith('.') || local.includes('..')) {
    throw invalid();
  }
  const labels = domain.split('.');
  if (labels.length < 2 || !labels.every((label) => LABEL.test(label)) || /^\d+$/.test(labels.at(-1)!)) {
    throw invalid();
  }
  return `${local}@${domain}`;
}
