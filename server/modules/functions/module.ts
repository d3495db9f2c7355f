import path from 'node:path';
import type { Platform } from '../../internal/platform.js';
import { InvocationRepository } from './repository.js';
import { FunctionsService } from './service.js';

/** Wires the functions module from the platform: repository, worker pool, loader. */
export function createFunctionsModule(platform: Platform): { service: FunctionsService } {
  const service = new FunctionsService(
    {
      functionsDir: platform.config.functionsDir,
      buildDir: path.join(platform.config.dataDir, 'functions-build'),
      environment: platform.config.environment,
    },
    new InvocationRepository(platform.db),
    platform.log,
  );
  return { service };
}
