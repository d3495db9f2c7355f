/**
 * The shape of a response schema for the wire type `T`: an object schema that names every
 * property of `T`, and no other. Fastify serializes a response with its schema and drops the
 * properties the schema does not name, so `schema satisfies ObjectSchemaOf<User>` makes a
 * field added to the wire type but forgotten in the schema a compile error, not a field that
 * silently stops reaching clients.
 */
export interface ObjectSchemaOf<T> {
  readonly type: 'object' | readonly ['object', 'null'];
  readonly properties: { readonly [K in keyof Required<T>]: unknown };
  readonly [keyword: string]: unknown;
}

/** An instant as the API writes it (ISO 8601, UTC). */
export const timestamp = { type: 'string', format: 'date-time' } as const;
export const optionalTimestamp = { type: ['string', 'null'], format: 'date-time' } as const;

/**
 * An object schema that names its properties and allows no other: as a response, the
 * serializer sends only these; as a body, anything else is a validation error.
 */
export function closedObject<const Properties extends object>(properties: Properties) {
  return { type: 'object', additionalProperties: false, properties } as const;
}

/** An array of closed objects with these properties. */
export function closedList<const Properties extends object>(properties: Properties) {
  return { type: 'array', items: closedObject(properties) } as const;
}
