import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { PositionStore } from './position-store.js';

/**
 * Positions in a JSON file, for Node clients (the CLI). Writes are coalesced: at most one per `flushMs`, written to a
 * temp file and renamed so that a crash leaves the old or the new file, never half of one. A position that was not yet
 * flushed when the process died only makes the client fetch a few messages again.
 */
export class FilePositionStore implements PositionStore {
  private readonly positions: Record<string, number>;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly path: string,
    private readonly flushMs = 200,
  ) {
    try {
      this.positions = JSON.parse(readFileSync(path, 'utf8')) as Record<string, number>;
    } catch {
      this.positions = {};
    }
  }

  async load(groupId: string): Promise<number | undefined> {
    return this.positions[groupId];
  }

  async save(groupId: string, seq: number): Promise<void> {
    this.positions[groupId] = seq;
    this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    mkdirSync(dirname(this.path), { recursive: true });
    writeFileSync(`${this.path}.tmp`, JSON.stringify(this.positions));
    renameSync(`${this.path}.tmp`, this.path);
  }
}
