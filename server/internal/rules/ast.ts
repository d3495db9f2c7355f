/** The syntax tree of a rule. Positions are 0-based offsets into the rule's source. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export type Root = 'auth' | 'doc' | 'incoming' | 'object' | 'now' | 'payload';

export type CompareOp = '==' | '!=' | '<' | '<=' | '>' | '>=';

export type FunctionName = 'size' | 'starts_with' | 'exists';

export type Expr =
  | { type: 'literal'; value: null | boolean | number | string; pos: number }
  | { type: 'array'; items: Expr[]; pos: number }
  /** `root` followed by field names: `doc.data.a.b` is root `doc`, path `['data', 'a', 'b']`. */
  | { type: 'var'; root: Root; path: string[]; pos: number }
  | { type: 'not'; operand: Expr; pos: number }
  /** `&&` and `||` chains are flattened, so a long chain does not make a deep tree. */
  | { type: 'and' | 'or'; operands: Expr[]; pos: number }
  | { type: 'compare'; op: CompareOp; left: Expr; right: Expr; pos: number }
  | { type: 'in'; left: Expr; right: Expr; pos: number }
  | { type: 'call'; fn: FunctionName; args: Expr[]; pos: number };

export const FUNCTION_ARITY: Record<FunctionName, number> = { size: 1, starts_with: 2, exists: 1 };

/** The fields each variable has; `data` (documents) and `claims` (auth) open a free JSON path. */
export const ROOT_FIELDS: Record<Root, readonly string[]> = {
  auth: ['uid', 'email', 'email_verified', 'role', 'aal', 'claims'],
  doc: ['id', 'owner', 'version', 'created_at', 'updated_at', 'data'],
  incoming: ['id', 'owner', 'version', 'created_at', 'updated_at', 'data'],
  object: ['path', 'size', 'content_type', 'owner', 'bucket'],
  now: [],
  /** An event's payload (topic publish rules): any JSON, read by a free path. */
  payload: [],
};

export const OPEN_FIELDS: ReadonlySet<string> = new Set(['data', 'claims']);

export const LIMITS = {
  /** Bytes of rule source, in UTF-8. */
  maxBytes: 4096,
  /** Nesting of parentheses, `!`, calls and array literals, counted together. */
  maxDepth: 32,
  /** Elements of one array literal. */
  maxArrayItems: 256,
  /** Segments of one field path such as `doc.data.a.b.c`. */
  maxPathSegments: 32,
} as const;
