import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The live heap of a Node server process, from a V8 heap snapshot: the process is started with
 * `--heapsnapshot-signal=SIGUSR2` in a directory of its own (where V8 writes the snapshot), and `liveHeapBytes` signals it
 * and adds up the self sizes of every object in the snapshot. A snapshot is taken after a full collection, so this is
 * what the process holds, without the garbage and the spare pages that its resident size also counts.
 */
export class LiveHeap {
  /** Where the server is started from, and so where V8 writes its snapshots. */
  readonly dir = mkdtempSync(join(tmpdir(), 'chorus-bench-heap-'));
  /** The Node.js flag that makes the server write a snapshot on SIGUSR2. */
  static readonly flags = ['--heapsnapshot-signal=SIGUSR2'];

  async liveHeapBytes(server: ChildProcess): Promise<number> {
    const before = new Set(readdirSync(this.dir));
    server.kill('SIGUSR2');
    const file = await this.newSnapshot(before);
    try {
      return selfSizeTotal(readFileSync(file));
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** The snapshot the signal started, once V8 has finished writing it (its size unchanged for a second). */
  private async newSnapshot(before: Set<string>): Promise<string> {
    const deadline = Date.now() + 120_000;
    let size = -1;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`no heap snapshot in ${this.dir} after 120 s`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const name = readdirSync(this.dir).find((entry) => !before.has(entry) && entry.endsWith('.heapsnapshot'));
      if (!name) continue;
      const now = statSync(join(this.dir, name)).size;
      if (now > 0 && now === size) return join(this.dir, name);
      size = now;
    }
  }
}

/**
 * The sum of the `self_size` field over the snapshot's nodes. The snapshot can be larger than a JavaScript string may
 * be, so its `nodes` array (a flat list of integers, `node_fields.length` per node) is read from the bytes directly.
 */
export function selfSizeTotal(snapshot: Buffer): number {
  const head = snapshot.subarray(0, 64 * 1024).toString();
  const fields = JSON.parse(/"node_fields":(\[[^\]]*\])/.exec(head)?.[1] ?? 'null') as string[] | null;
  const at = snapshot.indexOf('"nodes":[');
  if (!fields || at < 0) throw new Error('not a V8 heap snapshot');
  const stride = fields.length;
  const selfSize = fields.indexOf('self_size');
  let total = 0;
  let field = 0;
  let value = 0;
  let inNumber = false;
  for (let i = at + '"nodes":['.length; i < snapshot.length; i++) {
    const byte = snapshot[i]!;
    if (byte >= 0x30 && byte <= 0x39) {
      value = value * 10 + (byte - 0x30);
      inNumber = true;
      continue;
    }
    if (inNumber) {
      if (field === selfSize) total += value;
      field = (field + 1) % stride;
      value = 0;
      inNumber = false;
    }
    if (byte === 0x5d) break; // ']': the end of the nodes
  }
  return total;
}
