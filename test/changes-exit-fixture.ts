// Run by changes.test.ts in a child process: starts a change feed (which leads and ticks),
// stops it, and then does nothing, so the process must exit on its own.
import { ChangeFeed } from '../server/internal/changes/feed.js';
import { Database } from '../server/internal/db.js';
import { createLogger } from '../server/internal/log.js';
import { Metrics } from '../server/internal/metrics.js';

const url = process.argv[2];
if (!url) throw new Error('usage: changes-exit-fixture.ts <database url>');
const log = createLogger('silent', { pretty: false });
const db = new Database({ url }, log);
const feed = new ChangeFeed({ db, log, metrics: new Metrics(), databaseUrl: url }, { pollIntervalMs: 50 });
await feed.start();
const deadline = Date.now() + 10_000;
while (!feed.isLeader && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
console.log(JSON.stringify({ leader: feed.isLeader, cursor: feed.currentCursor() }));
await feed.stop();
await db.close();
