import path from 'node:path';
import type { Config } from '../../config.js';
import type { ReadinessCheck, ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import type { AuditLog } from '../audit/service.js';
import { FsBackend } from './backends/fs.js';
import type { StorageBackend } from './backends/index.js';
import { S3Backend } from './backends/s3.js';
import { StorageRepository } from './repository.js';
import { storageRoutes } from './routes.js';
import { StorageService } from './service.js';
import { UrlSigner } from './signing.js';
import { StorageSweeper } from './sweeper.js';
import { ImageTransformer } from './transforms.js';
import { ResumableUploads } from './uploads.js';

/**
 * The storage module: buckets, objects and signed URLs over the configured backend. start()
 * begins the periodic sweep of orphans on worker instances (one at a time cluster-wide).
 */
export interface StorageModule extends ServerModule {
  /** What functions' ctx.storage calls. */
  service: StorageService;
  /** The backend answers: part of /readyz. */
  readiness: ReadinessCheck;
}

export function createStorageBackend(config: Pick<Config, 'storage' | 'dataDir'>): StorageBackend {
  const { storage, dataDir } = config;
  if (storage.backend === 'fs') return new FsBackend(path.join(dataDir, 'storage'));
  return new S3Backend({ ...storage.s3, bucket: storage.s3.bucket ?? '', partSize: storage.s3PartSize });
}

export function buildStorageModule(platform: Platform, deps: { audit: AuditLog }): StorageModule {
  const { config, log } = platform;
  const backend = createStorageBackend(config);
  const repo = new StorageRepository(platform.db);
  const signer = new UrlSigner(config.storage.signingSecret, config.serviceKey);
  const { metrics } = platform;
  const uploadCount = metrics.counter('basalt_storage_uploads_total', 'Uploads, by result.', ['result']);
  const uploadedBytes = metrics.counter('basalt_storage_uploaded_bytes_total', 'Bytes of stored uploads.');
  const downloadedBytes = metrics.counter('basalt_storage_downloaded_bytes_total', 'Bytes of objects served.');
  const swept = metrics.counter('basalt_storage_swept_total', 'Orphans the sweeper removed, by kind.', ['kind']);
  const service = new StorageService(repo, backend, signer, log, {
    metrics: {
      upload(result, bytes) {
        uploadCount.inc({ result });
        if (bytes > 0) uploadedBytes.inc(bytes);
        if (result === 'stored') platform.usage.storageIn(bytes);
      },
      download(bytes) {
        if (bytes > 0) downloadedBytes.inc(bytes);
        platform.usage.storageOut(bytes);
      },
      remove() {
        platform.usage.storageRemoved();
      },
    },
    maxFileSize: config.storage.maxFileSize,
    publicUrl: config.publicUrl,
    heartbeatMs: Math.max(1000, Math.min(60_000, (config.storage.orphanGraceSeconds * 1000) / 4)),
    orphanGraceSeconds: config.storage.orphanGraceSeconds,
    transformer: new ImageTransformer(config.storage.transforms),
    audit: deps.audit,
  });
  const resumable = new ResumableUploads(repo, backend, service, log, {
    expirySeconds: config.storage.uploadExpirySeconds,
  });
  const sweeper = new StorageSweeper(repo, backend, log, resumable, (result) => {
    swept.inc({ kind: 'pending' }, result.pending);
    swept.inc({ kind: 'orphan' }, result.orphans);
    swept.inc({ kind: 'stale_write' }, result.stale_writes);
    swept.inc({ kind: 'expired_upload' }, result.expired_uploads);
  });
  return {
    service,
    readiness: { name: 'storage', check: () => backend.ping() },
    routes: async (app) => {
      await app.register(storageRoutes, {
        storage: service,
        uploads: resumable,
        sweeper,
        maxFileSize: config.storage.maxFileSize,
      });
    },
    async start() {
      if (config.roles.worker) sweeper.start(config.storage.sweepIntervalSeconds, config.storage.orphanGraceSeconds);
    },
    async stop() {
      await sweeper.stop();
      resumable.close();
      await backend.close();
    },
  };
}
