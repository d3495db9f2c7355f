import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import type { AuditLog } from '../audit/service.js';
import { CollectionRegistry } from './collection-registry.js';
import { CollectionService } from './collection-service.js';
import { SchemaCompiler } from './schema-compiler.js';
import { DocumentRepository } from './repository.js';
import { collectionAdminRoutes, documentRoutes } from './routes.js';
import { DocumentService } from './service.js';

/**
 * The documents module. Other modules take `documents` from here: realtime (snapshots, read
 * rules through `documents.collections`) and functions (`ctx.db`, with the service caller).
 * start() begins following collection changes made by any instance.
 */
export interface DocumentsModule extends ServerModule {
  documents: DocumentService;
  collections: CollectionService;
}

export function buildDocumentsModule(platform: Platform, deps: { audit: AuditLog }): DocumentsModule {
  const repo = new DocumentRepository(platform.db);
  const schemas = new SchemaCompiler();
  const registry = new CollectionRegistry(repo, schemas, {
    databaseUrl: platform.config.databaseUrl,
    log: platform.log,
  });
  const documents = new DocumentService(repo, registry, {
    maxDocumentBytes: platform.config.maxDocumentBytes,
    usage: platform.usage,
  });
  const collections = new CollectionService(repo, registry, schemas, deps.audit);
  return {
    documents,
    collections,
    routes: async (app) => {
      await app.register(documentRoutes, { documents });
      await app.register(collectionAdminRoutes, { collections });
    },
    start: () => registry.start(),
    stop: () => registry.stop(),
  };
}
