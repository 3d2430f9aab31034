import { afterAll, describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import { ChorusError } from '../protocol/index.js';
import { WriterMovedError } from '../sequencer/group-writers.js';
import type { DeliveredMark } from '../groups/group-store.js';
import {
  type ForwardedSend,
  MAX_RELAYED_MARKS,
  type SendForwarding,
  type SendForwardingOptions,
} from '../sequencer/send-forwarding.js';
import { until } from './harness.js';

/** Nodes sharing one medium: `node(id, options)` makes another. */
export interface ForwardingMedium {
  node(nodeId: string, options: SendForwardingOptions): Promise<SendForwarding>;
}

const send: ForwardedSend = { groupId: 'g1', senderId: 'alice', payload: { clientMsgId: 'c1', body: 'héllo' } };
const message: StampedMessage = {
  groupId: 'g1',
  seq: 7,
  senderId: 'alice',
  clientMsgId: 'c1',
  type: 'text',
  body: 'héllo',
  createdAt: new Date(0).toISOString(),
};

/** What every SendForwarding implementation promises (see sequencer/send-forwarding.ts). */
export function sendForwardingContract(name: string, medium: () => Promise<ForwardingMedium>): void {
  describe(`SendForwarding contract: ${name}`, () => {
    const opened: SendForwarding[] = [];
    let count = 0;
    const pair = async (options: Partial<SendForwardingOptions> = {}) => {
      const m = await medium();
      const internal: [unknown, ForwardedSend][] = [];
      const all: SendForwardingOptions = {
        timeoutMs: 5000,
        maxPending: 100,
        onInternalError: (err, s) => void internal.push([err, s]),
        ...options,
      };
      count += 1;
      const serving = await m.node(`serving-${count}-${process.pid}-${Date.now()}`, all);
      const asking = await m.node(`asking-${count}-${process.pid}-${Date.now()}`, all);
      opened.push(serving, asking);
      return { serving, asking, internal };
    };
    afterAll(async () => {
      for (const node of opened) await node.close();
    });

    it('hands the send to the named node once and brings its result back', async () => {
      const { serving, asking } = await pair();
      const served: ForwardedSend[] = [];
      serving.onRequest(async (s) => {
        served.push(s);
        return { message, duplicate: true };
      });
      expect(await asking.forward(serving.nodeId, send)).toEqual({ message, duplicate: true });
      expect(served).toEqual([send]);
    });

    it('brings a ChorusError back with its code and message, and a WriterMovedError as one', async () => {
      const { serving, asking } = await pair();
      serving.onRequest(async (s) => {
        if (s.groupId === 'moved') throw new WriterMovedError(['moved']);
        throw new ChorusError('REPLY_TO_UNKNOWN', 'no message 9 in this group');
      });
      await expect(asking.forward(serving.nodeId, send)).rejects.toMatchObject({
        code: 'REPLY_TO_UNKNOWN',
        message: 'no message 9 in this group',
      });
      await expect(asking.forward(serving.nodeId, { ...send, groupId: 'moved' })).rejects.toBeInstanceOf(
        WriterMovedError,
      );
    });

    it('answers a failure that is not a ChorusError as INTERNAL, and tells the serving node of it', async () => {
      const { serving, asking, internal } = await pair();
      serving.onRequest(async () => {
        throw new TypeError('a bug');
      });
      await expect(asking.forward(serving.nodeId, send)).rejects.toMatchObject({ code: 'INTERNAL' });
      expect(internal.map(([err, s]) => [(err as Error).message, s.groupId, s.senderId])).toEqual([
        ['a bug', 'g1', 'alice'],
      ]);
    });

    it('answers WriterMovedError for a node that is gone', async () => {
      const { serving, asking } = await pair();
      await serving.close();
      await expect(asking.forward(serving.nodeId, send)).rejects.toBeInstanceOf(WriterMovedError);
    });

    it('times out a send without an answer as STORE_UNAVAILABLE, and refuses beyond maxPending with OVERLOADED', async () => {
      const { serving, asking } = await pair({ timeoutMs: 300, maxPending: 2 });
      serving.onRequest(() => new Promise(() => {}));
      const waiting = [asking.forward(serving.nodeId, send), asking.forward(serving.nodeId, send)];
      await expect(asking.forward(serving.nodeId, send)).rejects.toMatchObject({ code: 'OVERLOADED' });
      for (const w of waiting) await expect(w).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    });

    it('relays delivered marks to the named node once, at most MAX_RELAYED_MARKS of a call, and to nobody else', async () => {
      const { serving, asking } = await pair();
      const got: DeliveredMark[][] = [];
      const elsewhere: DeliveredMark[][] = [];
      serving.onMarks((marks) => got.push(marks));
      asking.onMarks((marks) => elsewhere.push(marks));
      const marks = [
        { groupId: 'g1', userId: 'bob', seq: 3 },
        { groupId: 'g2', userId: 'carol', seq: 9 },
      ];
      await asking.relayMarks(serving.nodeId, marks);
      await until(() => got.length === 1, 'the marks reach the named node');
      expect(got[0]).toEqual(marks);
      const many = Array.from({ length: MAX_RELAYED_MARKS + 5 }, (_, i) => ({
        groupId: 'g3',
        userId: `u${i}`,
        seq: 1,
      }));
      await asking.relayMarks(serving.nodeId, many);
      await until(() => got.length === 2, 'the big relay arrives');
      expect(got[1]).toEqual(many.slice(0, MAX_RELAYED_MARKS));
      await new Promise((resolve) => setTimeout(resolve, 100)); // room for a duplicate to show up
      expect(got).toHaveLength(2);
      expect(elsewhere).toEqual([]);
    });

    it('refuses marks for a node that is gone, so that the caller keeps them', async () => {
      const { serving, asking } = await pair();
      const got: DeliveredMark[][] = [];
      serving.onMarks((marks) => got.push(marks));
      await serving.close();
      await expect(asking.relayMarks(serving.nodeId, [{ groupId: 'g1', userId: 'bob', seq: 1 }])).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(got).toEqual([]);
    });

    it('rejects the sends still waiting when it closes', async () => {
      const { serving, asking } = await pair();
      serving.onRequest(() => new Promise(() => {}));
      const waiting = asking.forward(serving.nodeId, send);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const rejected = expect(waiting).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
      await asking.close();
      await rejected;
    });
  });
}
