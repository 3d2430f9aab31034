import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { GroupWriters } from '../sequencer/group-writers.js';

/** Starts a node on an authority on holds that every node started by the same function shares. */
export type StartGroupWriters = (nodeId: string) => Promise<GroupWriters>;

const group = () => `g-${randomUUID()}`;

/**
 * What every GroupWriters implementation promises (see sequencer/group-writers.ts); each backend runs it. `nodes`: how
 * many nodes may share the authority (1: the implementation is for a node alone).
 */
export function groupWritersContract(name: string, nodes: number, startNode: StartGroupWriters): void {
  describe(`GroupWriters contract: ${name}`, () => {
    const started: GroupWriters[] = [];
    const start = async (nodeId: string) => {
      const writers = await startNode(nodeId);
      started.push(writers);
      return writers;
    };
    afterAll(async () => {
      await Promise.all(started.map((writers) => writers.close()));
    });

    it('a node asked first writes the group, under an epoch that holding() answers and that stays while it holds', async () => {
      const a = await start(`a-${randomUUID()}`);
      const groupId = group();
      const writer = await a.writerOf(groupId);
      expect(writer.here).toBe(true);
      const epoch = writer.here ? writer.epoch : Number.NaN;
      expect(epoch).toBeGreaterThanOrEqual(1);
      expect(a.holding(groupId)).toBe(epoch);
      expect(await a.writerOf(groupId)).toEqual({ here: true, epoch });
    });

    it('forgetting another node’s hold leaves its own holds alone', async () => {
      const a = await start(`a-${randomUUID()}`);
      const groupId = group();
      const writer = await a.writerOf(groupId);
      a.forget(group());
      expect(await a.writerOf(groupId)).toEqual(writer);
    });

    it('after close: closed, nothing held, and writerOf refuses with STORE_UNAVAILABLE', async () => {
      const a = await start(`a-${randomUUID()}`);
      const groupId = group();
      await a.writerOf(groupId);
      expect(a.closed).toBe(false);
      await a.close();
      expect(a.closed).toBe(true);
      expect(a.holding(groupId)).toBeUndefined();
      await expect(a.writerOf(groupId)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    });

    describe('with more than one node', () => {
      if (nodes < 2) {
        it(`${name} is for a node alone: the exclusion it promises is that every group is its own`, async () => {
          const a = await start('alone');
          const groups = [group(), group(), group()];
          expect((await Promise.all(groups.map((g) => a.writerOf(g)))).every((w) => w.here)).toBe(true);
        });
        return;
      }

      it('at most one node holds a group; the others are told which node it is', async () => {
        const a = await start(`a-${randomUUID()}`);
        const b = await start(`b-${randomUUID()}`);
        const groupId = group();
        const [first, second] = await Promise.all([a.writerOf(groupId), b.writerOf(groupId)]);
        expect([first, second].filter((w) => w.here)).toHaveLength(1);
        const holder = first.here ? a : b;
        const other = first.here ? b : a;
        expect(first.here ? second : first).toEqual({ here: false, nodeId: holder.nodeId });
        expect(holder.holding(groupId)).toBeGreaterThanOrEqual(1);
        expect(other.holding(groupId)).toBeUndefined();
      });

      it('a group given back on close is taken by the next node at once, under a larger epoch', async () => {
        const a = await start(`a-${randomUUID()}`);
        const b = await start(`b-${randomUUID()}`);
        const groupId = group();
        const first = await a.writerOf(groupId);
        await a.close();
        const next = await b.writerOf(groupId);
        expect(next.here).toBe(true);
        expect(next.here && first.here && next.epoch > first.epoch).toBe(true);
      });
    });
  });
}
