import { afterAll, describe, expect, it } from 'vitest';
import type { FanOut } from '../delivery/fan-out.js';
import type { StampedMessage } from '../protocol/index.js';
import { until } from './harness.js';

export const stamped = (groupId: string, seq: number, body = `m${seq}`): StampedMessage => ({
  groupId,
  seq,
  senderId: 'alice',
  clientMsgId: `c${seq}`,
  type: 'text',
  body,
  createdAt: new Date(0).toISOString(),
});

/** Nodes sharing one medium: `node()` makes another; `close()` ends the medium. */
export interface FanOutMedium {
  node(): Promise<FanOut>;
  close(): Promise<void>;
}

/** What every FanOut implementation promises (see broker/fanout.ts); a backend runs it with a medium of its own. */
export function fanOutContract(name: string, medium: () => Promise<FanOutMedium>): void {
  describe(`FanOut contract: ${name}`, () => {
    const media: FanOutMedium[] = [];
    const open = async () => {
      const m = await medium();
      media.push(m);
      return m;
    };
    afterAll(async () => {
      for (const m of media) await m.close();
    });

    const recorder = (node: FanOut) => {
      const got: { groupId: string; seq: number; payload: Buffer }[] = [];
      node.onDeliver((groupId, seq, payload) => got.push({ groupId, seq, payload: Buffer.from(payload) }));
      return got;
    };

    it('delivers on the publishing node within the publish call, in order, as the message JSON byte for byte', async () => {
      const m = await open();
      const writer = await m.node();
      const got = recorder(writer);
      const messages = [stamped('g1', 1, 'héllo "you"\nthere'), stamped('g1', 2), stamped('g2', 1)];
      for (const message of messages) {
        const before = got.length;
        writer.publish(message);
        expect(got.length).toBe(before + 1);
      }
      expect(got.map((d) => d.groupId)).toEqual(['g1', 'g1', 'g2']);
      expect(got.map((d) => d.payload.toString('utf8'))).toEqual(messages.map((message) => JSON.stringify(message)));
    });

    it('delivers on every other node once, per group in publish order', async () => {
      const m = await open();
      const [writer, second, third] = [await m.node(), await m.node(), await m.node()];
      const [own, gotSecond, gotThird] = [recorder(writer), recorder(second), recorder(third)];
      const messages = Array.from({ length: 500 }, (_, i) =>
        stamped(i % 3 ? 'g-a' : 'g_b', i + 1, `${'é'.repeat(i % 7)}\n${i}`),
      );
      for (const message of messages) writer.publish(message);
      await until(() => gotSecond.length >= 500 && gotThird.length >= 500, 'both other nodes receive all 500');
      await new Promise((resolve) => setTimeout(resolve, 100)); // room for a duplicate to show up
      for (const got of [own, gotSecond, gotThird]) {
        expect(got).toHaveLength(500);
        expect(got.map((d) => JSON.parse(d.payload.toString('utf8')))).toEqual(messages);
        expect(got.every((d, i) => d.groupId === messages[i]!.groupId && d.seq === messages[i]!.seq)).toBe(true);
      }
    });

    it("names on every node the node that published a group's last message", async () => {
      const m = await open();
      const [first, second] = [await m.node(), await m.node()];
      const [gotFirst, gotSecond] = [recorder(first), recorder(second)];
      expect(second.publisherOf('g-moved')).toBeUndefined();
      first.publish(stamped('g-moved', 1));
      await until(() => gotSecond.length === 1, 'the second node hears seq 1');
      expect([first.publisherOf('g-moved'), second.publisherOf('g-moved')]).toEqual([
        first.publisherOf('g-moved'),
        first.publisherOf('g-moved'),
      ]);
      const firstId = first.publisherOf('g-moved');
      expect(firstId).toEqual(expect.any(String));
      // The group's writer moves to the second node: its next message names it, on both.
      second.publish(stamped('g-moved', 2));
      await until(() => gotFirst.length === 2, 'the first node hears seq 2');
      const secondId = second.publisherOf('g-moved');
      expect(secondId).not.toBe(firstId);
      expect(first.publisherOf('g-moved')).toBe(secondId);
      expect(first.publisherOf('g-never')).toBeUndefined();
    });

    it('stops delivering to a node once it is closed', async () => {
      const m = await open();
      const [writer, leaving] = [await m.node(), await m.node()];
      const gotLeaving = recorder(leaving);
      await leaving.close();
      const own = recorder(writer);
      writer.publish(stamped('g1', 1));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(own).toHaveLength(1);
      expect(gotLeaving).toHaveLength(0);
    });
  });
}
