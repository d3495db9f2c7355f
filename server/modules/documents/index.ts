import type { Platform } from '../../internal/platform.js';
import { CollectionRegistry } from './collection-registry.js';
import { CollectionService } from './collection-service.js';
import { SchemaCompiler } from './schema-compiler.js';
import { DocumentRepository } from './repository.js';
import { DocumentService } from './service.js';

export interface DocumentsModule {
  documents: DocumentService;
  collections: CollectionService;
  registry: CollectionRegistry;
}

/**
 * Builds the documents module from the platform and starts its metadata listener.
 * Other modules take `documents` from here: realtime (snapshots, read rules through
 * `documents.collections`) and functions (`ctx.db`, with the service caller).
 */
export async function createDocumentsModule(platform: Platform): Promise<DocumentsModule> {
  const repo = new DocumentRepository(platform.db);
  const schemas = new SchemaCompiler();
  const registry = new CollectionRegistry(repo, schemas, {
    databaseUrl: platform.config.databaseUrl,
    log: platform.log,
  });
  await registry.start();
  platform.onClose(() => registry.stop());
  return {
    documents: new DocumentService(repo, registry, { maxDocumentBytes: platform.config.maxDocumentBytes }),
    collections: new CollectionService(repo, registry, schemas),
    registry,
  };
}

export { DocumentService } from './service.js';
export type { BatchOp, BatchResult, CreateInput, DataInput, QueryResult, WriteOptions } from './service.js';
export type { CompiledCollection } from './collection-registry.js';
export type { Document, JsonObject, JsonValue } from './types.js';
