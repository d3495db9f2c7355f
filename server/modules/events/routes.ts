import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { requireService } from '../../internal/guards.js';
import { adminChangeEvent } from '../audit/routes.js';
import { errorResponse } from '../../internal/http/errors.js';
import { closedObject, type ObjectSchemaOf } from '../../internal/http/response-schema.js';
import {
  MAX_DELAY_SECONDS,
  MAX_KEY_LENGTH,
  MAX_PAYLOAD_BYTES,
  MAX_PUBLISH_BATCH,
  MAX_PUBLISH_BODY_BYTES,
  type EventsService,
  type TopicSubscriber,
  type TopicSummary,
} from './service.js';

const errors = { '4xx': errorResponse, '5xx': errorResponse } as const;

const topicParams = {
  type: 'object',
  required: ['topic'],
  properties: { topic: { type: 'string', pattern: '^[a-z][a-z0-9._-]{0,127}$' } },
} as const;

const rulesSchema = closedObject({ publish: { type: 'string' } });

const subscriberSchema = closedObject({
  function: { type: 'string' },
  version: { type: 'integer' },
  batch_size: { type: ['integer', 'null'] },
  depth: { type: 'integer', description: 'Events waiting, retrying or delayed' },
  dead_letters: { type: 'integer', description: 'Events dead-lettered after their retries' },
}) satisfies ObjectSchemaOf<TopicSubscriber>;

const topicSchema = closedObject({
  name: { type: 'string' },
  rules: rulesSchema,
  subscribers: { type: 'array', items: subscriberSchema },
  depth: { type: 'integer' },
  dead_letters: { type: 'integer' },
}) satisfies ObjectSchemaOf<TopicSummary>;

/**
 * The body of a publish, one event or a batch: each payload's own limit is checked on its JSON
 * (MAX_PAYLOAD_BYTES), so a single event's body may be a little over that too.
 */
const PUBLISH_BODY_LIMIT = Math.max(MAX_PUBLISH_BODY_BYTES, MAX_PAYLOAD_BYTES + 4096);

/** What one event of a publish may say besides its payload. */
const eventOptions = {
  key: {
    type: ['string', 'null'],
    minLength: 1,
    maxLength: MAX_KEY_LENGTH,
    description: 'Events with one key run in publish order, one at a time per function',
  },
  delay_seconds: { type: 'integer', minimum: 0, maximum: MAX_DELAY_SECONDS },
} as const;

export const eventRoutes: FastifyPluginAsync<{ events: EventsService }> = async (plugin, { events }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  // The key is checked before the parameters, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);

  app.post(
    '/v1/events/:topic',
    {
      bodyLimit: PUBLISH_BODY_LIMIT,
      schema: {
        tags: ['events'],
        summary:
          'Publish an event to every function subscribed to the topic: the service key, or a token the publish rule allows (docs/events.md)',
        params: topicParams,
        body: {
          type: 'object',
          additionalProperties: false,
          description: `One event (\`payload\`, with its \`key\` and \`delay_seconds\`), or a batch of up to ${MAX_PUBLISH_BATCH} in \`events\` (${MAX_PUBLISH_BODY_BYTES} bytes of JSON at most): all published in one transaction or none`,
          properties: {
            payload: { description: `Any JSON value, at most ${MAX_PAYLOAD_BYTES} bytes` },
            ...eventOptions,
            events: {
              type: 'array',
              minItems: 1,
              maxItems: MAX_PUBLISH_BATCH,
              description: 'A batch: each event runs in the order of the list among those of its key',
              items: {
                type: 'object',
                required: ['payload'],
                additionalProperties: false,
                properties: {
                  payload: { description: `Any JSON value, at most ${MAX_PAYLOAD_BYTES} bytes` },
                  ...eventOptions,
                },
              },
            },
          },
        },
        response: {
          202: closedObject({
            id: { type: 'string', description: 'One event: its id, the same for every subscriber' },
            ids: { type: 'array', items: { type: 'string' }, description: 'A batch: the ids of its events, in order' },
          }),
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const published = await events.publishAs(request.caller, request.params.topic, request.body);
      return reply.code(202).send(published);
    },
  );

  app.get(
    '/v1/admin/topics',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Topics: their rules, subscribers, queue depth and dead letters',
        response: { 200: closedObject({ topics: { type: 'array', items: topicSchema } }), ...errors },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { topics: await events.list() };
    },
  );

  app.put(
    '/v1/admin/topics/:topic',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: "Set a topic's rules: `publish` decides who may publish with a user token (auth, payload, now)",
        params: topicParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            rules: {
              type: 'object',
              additionalProperties: false,
              properties: { publish: { type: ['string', 'null'], maxLength: 4096 } },
            },
          },
        },
        response: { 200: topicSchema, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request) => {
      requireService(request.caller);
      return events.configure(request.params.topic, request.body, adminChangeEvent(request, 200));
    },
  );

  app.delete(
    '/v1/admin/topics/:topic',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: "Drop a topic's settings (its rules); its subscribers are the functions that declare it",
        params: topicParams,
        response: { 204: { type: 'null' }, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      requireService(request.caller);
      await events.remove(request.params.topic, adminChangeEvent(request, 204));
      return reply.code(204).send(null);
    },
  );
};
