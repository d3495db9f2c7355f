#!/usr/bin/env node
// The `basalt` command: runs the TypeScript CLI through tsx (a dependency of Basalt).
import { register } from 'tsx/esm/api';

register();
await import('../cli/basalt.ts');
