import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/**
 * The SHA-256 of an upload, computed beside the event loop.
 *
 * Hashing costs about 0.9 ms of CPU per MiB (with SHA extensions): on the event loop, a large
 * upload's hash runs in series with its socket reads and holds an upload to disk at about two
 * thirds of the disk's speed (docs/benchmarks.md, Storage). So once an upload passes one slice
 * (1 MiB), its bytes are copied into 1 MiB slices that a worker thread hashes while the event
 * loop goes on reading; the slices travel to the worker and back (transferred, not cloned), at
 * most SLICES_PER_UPLOAD per upload, so an upload's extra memory is bounded and its buffers are
 * reused rather than left to the garbage collector. Smaller uploads are hashed in place: for
 * them a round trip to the worker costs more than the hash.
 */
const SLICE_BYTES = 1024 * 1024;
/**
 * Slices an upload may have in the worker's queue or being filled; then it waits for one back.
 * Two keep the worker and the socket busy at once (4 were no faster in the storage benchmark).
 */
const SLICES_PER_UPLOAD = 2;

/**
 * The worker's whole program, plain JavaScript run with `eval` so that it needs no loader or
 * build step wherever the server runs (tsx, a test runner, a bundle). One hash per open id.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (message) => {
  const id = message.id;
  if (message.type === 'update') {
    let hash = hashes.get(id);
    if (!hash) {
      hash = createHash('sha256');
      hashes.set(id, hash);
    }
    hash.update(new Uint8Array(message.buffer, 0, message.length));
    parentPort.postMessage({ type: 'slice', id, buffer: message.buffer }, [message.buffer]);
  } else if (message.type === 'digest') {
    const hash = hashes.get(id) ?? createHash('sha256');
    hashes.delete(id);
    parentPort.postMessage({ type: 'digest', id, hex: hash.digest('hex') });
  } else if (message.type === 'discard') {
    hashes.delete(id);
  }
});
`;

type WorkerReply = { type: 'slice'; id: number; buffer: ArrayBuffer } | { type: 'digest'; id: number; hex: string };

interface OpenDigest {
  /** A slice back from the worker, hashed and free to fill again. */
  onSlice(slice: Buffer): void;
  onDigest(hex: string): void;
  onFailure(error: Error): void;
}

/**
 * The one hashing worker of the process, started on first use and again after a failure. A
 * worker thread is a V8 instance of its own (some 10 MiB): once no digest has been open for
 * `idleMs` it ends, and the next large upload starts another (tens of ms).
 */
class HashingWorker {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly open = new Map<number, OpenDigest>();
  /** Open digests waiting between the requests of a resumable upload: they do not keep the process alive. */
  private readonly parked = new Set<number>();
  private idleTimer: NodeJS.Timeout | null = null;
  idleMs = 30_000;

  begin(digest: OpenDigest): number {
    const worker = this.running();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const id = this.nextId++;
    this.open.set(id, digest);
    this.refresh(worker);
    return id;
  }

  /**
   * A parked digest waits for more content that may never come (a resumable upload between its
   * requests): it keeps the worker, not the process.
   */
  setParked(id: number, parked: boolean): void {
    if (!this.open.has(id)) return;
    if (parked) this.parked.add(id);
    else this.parked.delete(id);
    if (this.worker) this.refresh(this.worker);
  }

  /** Keeps the process alive only while a digest is owed to a request in progress. */
  private refresh(worker: Worker): void {
    if (this.open.size > this.parked.size) worker.ref();
    else worker.unref();
  }

  /** Whether the worker thread is running (tests). */
  isRunning(): boolean {
    return this.worker !== null;
  }

  update(id: number, slice: Buffer, length: number): void {
    const buffer = slice.buffer as ArrayBuffer;
    this.running().postMessage({ type: 'update', id, buffer, length }, [buffer]);
  }

  requestDigest(id: number): void {
    this.running().postMessage({ type: 'digest', id });
  }

  discard(id: number): void {
    if (!this.open.has(id)) return;
    this.finish(id);
    this.worker?.postMessage({ type: 'discard', id });
  }

  /** How many digests are open (tests: an abandoned upload must leave none). */
  openCount(): number {
    return this.open.size;
  }

  /** Ends the worker as a crash would (tests: uploads in progress must fail cleanly). */
  async terminateForTests(): Promise<void> {
    await this.worker?.terminate();
  }

  private finish(id: number): void {
    this.open.delete(id);
    this.parked.delete(id);
    if (this.worker) this.refresh(this.worker);
    if (this.open.size > 0 || !this.worker) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.endIdle(), this.idleMs);
    this.idleTimer.unref();
  }

  private endIdle(): void {
    this.idleTimer = null;
    const worker = this.worker;
    if (!worker || this.open.size > 0) return;
    // Forgotten first, so that its exit is not taken for a failure.
    this.worker = null;
    void worker.terminate();
  }

  private running(): Worker {
    if (this.worker) return this.worker;
    // No flags of the server's own (a TypeScript loader, heap settings): the worker runs
    // plain JavaScript and needs none.
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const digest = this.open.get(reply.id);
      if (!digest) return; // discarded meanwhile
      if (reply.type === 'slice') {
        digest.onSlice(Buffer.from(reply.buffer));
      } else {
        this.finish(reply.id);
        digest.onDigest(reply.hex);
      }
    });
    const fail = (error: Error): void => {
      if (this.worker !== worker) return;
      this.worker = null;
      const failed = [...this.open.values()];
      this.open.clear();
      this.parked.clear();
      for (const digest of failed) digest.onFailure(error);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`The hashing worker stopped (exit code ${code}).`)));
    this.worker = worker;
    return worker;
  }
}

const hashingWorker = new HashingWorker();

/** Open digests of the process (for tests). */
export const openContentDigests = (): number => hashingWorker.openCount();

/** Stops the hashing worker as a crash would (for tests). */
export const stopHashingWorkerForTests = (): Promise<void> => hashingWorker.terminateForTests();

/** Whether the hashing worker is running, and how long it stays after its last digest (for tests). */
export const hashingWorkerForTests = {
  isRunning: (): boolean => hashingWorker.isRunning(),
  setIdleMs: (ms: number): void => {
    hashingWorker.idleMs = ms;
  },
};

/** SHA-256 of a stream of chunks: `update` each in order (awaiting it), then `digest` once. */
export class ContentDigest {
  /** Chunks held (not copied) until the content passes one slice, or ends before that. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** The worker's id for this content, once it is large enough to be hashed there. */
  private id: number | null = null;
  private filling: Buffer | null = null;
  private filled = 0;
  private readonly free: Buffer[] = [];
  private slices = 0;
  private waitingForSlice: (() => void) | null = null;
  private failure: Error | null = null;
  private result: { resolve(hex: string): void; reject(error: Error): void } | null = null;
  private ended = false;
  /** Between the requests of a resumable upload: slices coming back are let go, not kept. */
  private parked = false;
  /** Bytes given to `update` so far. */
  bytes = 0;

  /** Whether the worker failed under this content (its digest can no longer be had). */
  get failed(): boolean {
    return this.failure !== null;
  }

  async update(chunk: Buffer): Promise<void> {
    if (this.ended) throw new Error('ContentDigest: update after digest or discard');
    this.bytes += chunk.length;
    if (this.parked) this.unpark();
    if (this.id === null) {
      if (this.heldBytes + chunk.length < SLICE_BYTES) {
        this.held.push(chunk);
        this.heldBytes += chunk.length;
        return;
      }
      this.beginInWorker();
      const held = this.held;
      this.held = [];
      this.heldBytes = 0;
      for (const earlier of held) await this.copyIn(earlier);
    }
    await this.copyIn(chunk);
  }

  /**
   * Keeps the content's hash open for more (a resumable upload between two of its requests)
   * while holding no buffer: what was copied so far goes to the worker, the slices are let go
   * as they come back. The worker keeps only the hash state (some hundred bytes); the next
   * `update` takes slices again.
   */
  async park(): Promise<void> {
    if (this.ended || this.parked) return;
    if (this.id === null) {
      if (this.heldBytes === 0) return;
      this.beginInWorker();
      const held = this.held;
      this.held = [];
      this.heldBytes = 0;
      for (const earlier of held) await this.copyIn(earlier);
    }
    if (this.failure) return;
    if (this.filling && this.filled > 0) hashingWorker.update(this.id!, this.filling, this.filled);
    else if (this.filling) this.free.push(this.filling);
    this.filling = null;
    this.filled = 0;
    this.slices -= this.free.length;
    this.free.length = 0;
    this.parked = true;
    hashingWorker.setParked(this.id!, true);
  }

  private unpark(): void {
    this.parked = false;
    if (this.id !== null) hashingWorker.setParked(this.id, false);
  }

  private beginInWorker(): void {
    this.id = hashingWorker.begin({
      onSlice: (slice) => {
        if (this.parked) {
          this.slices--;
          return;
        }
        this.free.push(slice);
        this.wake();
      },
      onDigest: (hex) => this.result?.resolve(hex),
      onFailure: (error) => {
        this.failure = error;
        this.wake();
        this.result?.reject(error);
      },
    });
  }

  async digest(): Promise<string> {
    if (this.ended) throw new Error('ContentDigest: digest after digest or discard');
    this.ended = true;
    if (this.id === null) {
      const hash = createHash('sha256');
      for (const chunk of this.held) hash.update(chunk);
      this.held = [];
      return hash.digest('hex');
    }
    if (this.failure) throw this.failure;
    const id = this.id;
    const hex = new Promise<string>((resolve, reject) => {
      this.result = { resolve, reject };
    });
    if (this.filling && this.filled > 0) hashingWorker.update(id, this.filling, this.filled);
    this.filling = null;
    hashingWorker.requestDigest(id);
    return hex;
  }

  /** Forgets the content (a failed upload): nothing stays open in the worker. */
  discard(): void {
    this.ended = true;
    this.held = [];
    if (this.id !== null) hashingWorker.discard(this.id);
    this.result?.reject(new Error('The content was discarded before its digest.'));
    this.result = null;
  }

  private async copyIn(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      if (!this.filling) {
        this.filling = await this.freeSlice();
        this.filled = 0;
      }
      const copied = chunk.copy(this.filling, this.filled, offset);
      this.filled += copied;
      offset += copied;
      if (this.filled === SLICE_BYTES) {
        hashingWorker.update(this.id!, this.filling, SLICE_BYTES);
        this.filling = null;
      }
    }
  }

  private async freeSlice(): Promise<Buffer> {
    for (;;) {
      if (this.failure) throw this.failure;
      const slice = this.free.pop();
      if (slice) return slice;
      if (this.slices < SLICES_PER_UPLOAD) {
        this.slices++;
        // A buffer of its own (never a slice of Node's shared pool), so it can be transferred.
        return Buffer.allocUnsafeSlow(SLICE_BYTES);
      }
      await new Promise<void>((resolve) => {
        this.waitingForSlice = resolve;
      });
    }
  }

  private wake(): void {
    const waiting = this.waitingForSlice;
    this.waitingForSlice = null;
    waiting?.();
  }
}
