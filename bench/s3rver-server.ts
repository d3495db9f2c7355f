/**
 * The S3 server of the storage benchmark (s3rver), in a process of its own so that its memory
 * and CPU are never counted as Basalt's or the load generator's. Settings: PORT,
 * S3RVER_DIR (where it keeps objects), S3RVER_BUCKET (created at start).
 */
import S3rver from 's3rver';

const port = Number(process.env.PORT ?? 4569);
const directory = process.env.S3RVER_DIR ?? '/tmp/basalt-bench-s3rver';
const bucket = process.env.S3RVER_BUCKET ?? 'bench';

const server = new S3rver({
  port,
  address: '127.0.0.1',
  silent: true,
  directory,
  configureBuckets: [{ name: bucket, configs: [] }],
});
await server.run();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    void server.close().finally(() => process.exit(0));
  });
}
