/** JSON Schemas of collections: checked when an admin saves one, compiled into validators for writes. */
import { Ajv, type ValidateFunction } from 'ajv';
import * as addFormatsModule from 'ajv-formats';
import { AppError } from '../../internal/errors.js';
import type { JsonObject } from './types.js';

// ajv-formats is CommonJS with a default export; under NodeNext the callable sits on .default.
const addFormats = addFormatsModule.default.default;

/** One way data fails a collection's schema, as the API reports it. */
export interface SchemaIssue {
  path: string;
  message: string;
  params: Record<string, unknown>;
}

/** Checks data against a collection's schema: the issues (at most 20), none when it conforms. */
export type DataValidator = (data: JsonObject) => SchemaIssue[];

const MAX_SCHEMA_ISSUES = 20;

function schemaError(message: string, cause?: unknown): AppError {
  return new AppError('INVALID_REQUEST', `schema: ${message}`, { details: { field: 'schema' }, cause });
}

/** Where `$async` appears in a schema (its JSON pointer), or null. Iterative: schemas come from requests. */
function findAsyncKeyword(schema: unknown): string | null {
  const stack: Array<{ value: unknown; pointer: string }> = [{ value: schema, pointer: '#' }];
  while (stack.length > 0) {
    const { value, pointer } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, inner] of Object.entries(value)) {
      const innerPointer = `${pointer}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
      if (key === '$async' && !Array.isArray(value)) return innerPointer;
      stack.push({ value: inner, pointer: innerPointer });
    }
  }
  return null;
}

/**
 * Compiles JSON Schemas for document data. Two Ajv instances: a strict one checks a schema
 * when an admin saves it, a lenient one compiles stored schemas for requests.
 *
 * The strict check refuses what Ajv would accept but never enforce, so a schema that is
 * saved is a schema that runs: unknown keywords (typos such as `minimun`, and keywords of
 * later drafts such as `unevaluatedProperties` that this draft-07 validator skips), unknown
 * formats, keywords ignored in their position, and `$async` — an asynchronous validator
 * returns a promise, which writes cannot wait on (the promise would read as "valid" and its
 * rejection would go unhandled). Stored schemas are compiled leniently so that one saved
 * before these checks keeps loading; one with `$async` fails closed (see `load`).
 */
export class SchemaCompiler {
  private readonly lenient: Ajv;
  private readonly strict: Ajv;

  constructor() {
    // No logger: Ajv would otherwise warn on the console about what the lenient instance skips.
    this.lenient = new Ajv({ allErrors: true, strict: false, addUsedSchema: false, logger: false });
    this.strict = new Ajv({ allErrors: true, strict: false, strictSchema: true, addUsedSchema: false, logger: false });
    addFormats(this.lenient);
    addFormats(this.strict);
  }

  /** Checks a schema an admin is saving; a schema that cannot run as written is 400 with the reason. */
  check(schema: unknown): void {
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
      throw schemaError('a JSON Schema object.');
    }
    const asyncAt = findAsyncKeyword(schema);
    if (asyncAt) {
      throw schemaError(
        `"$async" (at ${asyncAt}) makes validation asynchronous, which document writes cannot wait for; remove it.`,
      );
    }
    try {
      this.strict.compile(schema);
    } catch (error) {
      throw schemaError(error instanceof Error ? error.message : 'not a valid JSON Schema', error);
    } finally {
      this.strict.removeSchema(schema);
    }
  }

  /** Compiles a stored schema into a validator for writes. */
  load(schema: JsonObject): DataValidator {
    let validate: ValidateFunction;
    try {
      validate = this.lenient.compile(schema);
    } catch (error) {
      throw schemaError(error instanceof Error ? error.message : 'not a valid JSON Schema', error);
    } finally {
      // Ajv caches every compiled schema by object, and the registry compiles a fresh row on
      // every reload: without this the cache would grow for as long as the process runs.
      this.lenient.removeSchema(schema);
    }
    if (schema.$async === true) {
      // Saved before `$async` was refused: no write is checked against it, so none is let through.
      return () => [
        {
          path: 'data',
          message: 'the collection schema uses "$async", which Basalt cannot run; an admin must replace it',
          params: {},
        },
      ];
    }
    return (data) => {
      if (validate(data)) return [];
      return (validate.errors ?? []).slice(0, MAX_SCHEMA_ISSUES).map((error) => ({
        path: `data${error.instancePath}`,
        message: error.message ?? 'is invalid',
        params: error.params,
      }));
    };
  }
}
