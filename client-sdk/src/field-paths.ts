/**
 * Field paths and the values at them, for typed collections (`collection<Note>('notes')`):
 * `where('meta.color', '==', 'red')` is checked against Note, a misspelt path or a value of
 * the wrong type does not compile. An untyped collection (DocumentData, whose keys are any
 * string) takes any path and any value, as the server does.
 */
/** The operators of a query condition (API.md, "Documents"). */
export type WhereOp =
  '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'not-in' | 'array-contains' | 'array-contains-any' | 'exists';

/** The system fields a query may name besides paths into data. */
export type SystemField = 'id' | 'owner' | 'created_at' | 'updated_at';

/** The value type of each system field. */
interface SystemFieldValues {
  id: string;
  owner: string | null;
  created_at: string;
  updated_at: string;
}

/** How deep typed paths go into nested objects (deeper paths are still accepted as strings by untyped collections). */
type Depths = [never, 0, 1, 2, 3, 4, 5];

/** Values whose insides are not addressed by paths. */
type Leaf = string | number | boolean | bigint | null | undefined | Date;

/** Whether T is an open record (`Record<string, unknown>`, DocumentData): its keys are any string. */
type IsOpen<T> = string extends keyof T ? true : false;

type PathsOf<T, D extends number> = [D] extends [never]
  ? never
  : IsOpen<T> extends true
    ? string
    : { [K in keyof T & string]: K | SubPaths<K, NonNullable<T[K]>, D> }[keyof T & string];

/** The paths below key K of a value V: array positions (`scores.0`) and nested fields. */
type SubPaths<K extends string, V, D extends number> = [D] extends [never]
  ? never
  : V extends Leaf
    ? never
    : V extends readonly (infer E)[]
      ? `${K}.${number}` | SubPaths<`${K}.${number}`, NonNullable<E>, Depths[D]>
      : V extends object
        ? `${K}.${PathsOf<V, Depths[D]>}`
        : never;

/**
 * A dotted path into the data of T (`title`, `meta.color`). For an untyped collection, any string.
 */
export type FieldPath<T> = IsOpen<T> extends true ? string : PathsOf<T, 5>;

/** A path a query may filter or order on: a field path or a system field. */
export type QueryPath<T> = FieldPath<T> | SystemField;

/** The type of the value at a dotted path of T (`unknown` where T does not say). */
export type PathValue<T, P extends string> = P extends keyof SystemFieldValues
  ? SystemFieldValues[P]
  : DataPathValue<T, P>;

type DataPathValue<T, P extends string> =
  IsOpen<T> extends true
    ? unknown
    : T extends readonly (infer E)[]
      ? P extends `${number}`
        ? E | undefined
        : P extends `${number}.${infer Rest}`
          ? DataPathValue<NonNullable<E>, Rest> | undefined
          : unknown
      : P extends keyof T
        ? T[P]
        : P extends `${infer Head}.${infer Rest}`
          ? Head extends keyof T
            ? DataPathValue<NonNullable<T[Head]>, Rest> | (undefined extends T[Head] ? undefined : never)
            : unknown
          : unknown;

type ElementOf<V> = V extends readonly (infer E)[] ? E : unknown extends V ? unknown : never;

/**
 * What `where(path, op, value)` takes as value, given the field's type V: V itself for
 * comparisons, a list of V for `in`/`not-in`, an element for `array-contains`, a list of
 * elements for `array-contains-any`, a boolean for `exists`.
 */
export type WhereValue<V, Op extends WhereOp> = Op extends 'in' | 'not-in'
  ? readonly V[]
  : Op extends 'array-contains'
    ? ElementOf<NonNullable<V>>
    : Op extends 'array-contains-any'
      ? readonly ElementOf<NonNullable<V>>[]
      : Op extends 'exists'
        ? boolean
        : V;

type TopKey<P extends string> = P extends `${infer Head}.${string}` ? Head : P;
type SubPath<P extends string, K extends string> = P extends `${K}.${infer Rest}` ? Rest : never;

/**
 * The data of T reduced to the selected paths (`select('title', 'meta.color')`): what a query
 * with a projection returns. Untyped collections stay untyped.
 */
export type Selected<T, P extends string> =
  IsOpen<T> extends true
    ? T
    : {
        [K in keyof Pick<T, keyof T & TopKey<P>>]: K extends P
          ? T[K]
          : NonNullable<T[K]> extends object
            ? Selected<NonNullable<T[K]>, SubPath<P, K & string>> | Extract<T[K], undefined | null>
            : T[K];
      };
