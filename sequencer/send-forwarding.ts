import type { DeliveredMark } from '../groups/group-store.js';
import { ChorusError } from '../protocol/index.js';
import { WriterMovedError } from './group-writers.js';
import type { SendResult } from './sequencer.js';

/** A send on its way to the node that writes its group; the payload was checked by the node the sender is on. */
export interface ForwardedSend {
  groupId: string;
  senderId: string;
  payload: unknown;
}

export interface SendForwardingOptions {
  /** A forwarded send without an answer after this long fails with STORE_UNAVAILABLE (a retry is always safe). */
  timeoutMs: number;
  /** Forwarded sends waiting for an answer; beyond this a send is refused with OVERLOADED. */
  maxPending: number;
  /** Told of a failure serving a forwarded send that is not a ChorusError (a bug): it is answered as INTERNAL. */
  onInternalError: (err: unknown, send: ForwardedSend) => void;
}

/**
 * How a send reaches the sequencer of the node that writes its group: the seam between nodes on the send path. Members'
 * delivered marks travel to the writer the same way, so that each group's are stored and told from one node.
 *
 * Contract:
 * - `forward(nodeId, send)` hands the send to the `onRequest` handler of node `nodeId`, at most once, and settles as
 *   that handler did: its result, or its ChorusError (same code and message). A failure that is not a ChorusError is
 *   answered as INTERNAL and reported to the serving node's `onInternalError`. A WriterMovedError (the node does not
 *   write the group, or has no handler) comes back as a WriterMovedError: the caller routes the send again.
 * - A node that nobody serves (gone) answers WriterMovedError when that can be known at once, otherwise the send
 *   times out: after `timeoutMs` without an answer it rejects with STORE_UNAVAILABLE. Either way it may or may not have
 *   been stored, and a retry with the same clientMsgId is safe.
 * - With `maxPending` sends waiting for answers, another is refused at once with OVERLOADED.
 * - `close` rejects every send still waiting with STORE_UNAVAILABLE and stops serving requests.
 * - `relayMarks(nodeId, marks)` hands the marks to the `onMarks` handler of node `nodeId`, at most once. It rejects
 *   when they cannot reach it (that node is gone, the medium is away), and the caller keeps them; resolving, they may
 *   still be lost on the way (a later delivery carries a higher mark). At most MAX_RELAYED_MARKS per call.
 */
export interface SendForwarding {
  /** This node's address, as other nodes forward to it. */
  readonly nodeId: string;
  /** Serves sends forwarded to this node with `handler`. */
  onRequest(handler: (send: ForwardedSend) => Promise<SendResult>): void;
  forward(nodeId: string, send: ForwardedSend): Promise<SendResult>;
  /** Serves delivered marks other nodes relay to this one with `handler`. */
  onMarks(handler: (marks: DeliveredMark[]) => void): void;
  relayMarks(nodeId: string, marks: DeliveredMark[]): Promise<void>;
  close(): Promise<void>;
}

/** Delivered marks in one relayMarks call (about 1 MB as JSON): a node writes any more itself. */
export const MAX_RELAYED_MARKS = 10_000;

/**
 * Forwarding between the nodes of one process: the memory implementation (one node, which never forwards, or several
 * in tests). Every node made by the same `SendForwardingLocal.hub()` can reach the others by id.
 */
export class SendForwardingLocal implements SendForwarding {
  private serve: ((send: ForwardedSend) => Promise<SendResult>) | undefined;
  private takeMarks: ((marks: DeliveredMark[]) => void) | undefined;
  private readonly waiting = new Set<(err: unknown) => void>();

  private constructor(
    readonly nodeId: string,
    private readonly nodes: Map<string, SendForwardingLocal>,
    private readonly options: SendForwardingOptions,
  ) {}

  /** A medium shared by the nodes it makes: call the result once per node. */
  static hub(): (nodeId: string, options: SendForwardingOptions) => SendForwardingLocal {
    const nodes = new Map<string, SendForwardingLocal>();
    return (nodeId, options) => {
      const node = new SendForwardingLocal(nodeId, nodes, options);
      nodes.set(nodeId, node);
      return node;
    };
  }

  onRequest(handler: (send: ForwardedSend) => Promise<SendResult>): void {
    this.serve = handler;
  }

  forward(nodeId: string, send: ForwardedSend): Promise<SendResult> {
    if (this.waiting.size >= this.options.maxPending) return Promise.reject(new ChorusError('OVERLOADED'));
    const target = this.nodes.get(nodeId);
    if (!target) return Promise.reject(new WriterMovedError([send.groupId]));
    return new Promise<SendResult>((resolve, reject) => {
      const settle = (outcome: () => void) => {
        if (!this.waiting.delete(fail)) return;
        clearTimeout(timer);
        outcome();
      };
      const fail = (err: unknown) => settle(() => reject(err));
      const timer = setTimeout(
        () =>
          fail(
            new ChorusError(
              'STORE_UNAVAILABLE',
              'the node that writes this group did not answer; retry with the same clientMsgId',
            ),
          ),
        this.options.timeoutMs,
      );
      this.waiting.add(fail);
      target.answer(send).then((result) => settle(() => resolve(result)), fail);
    });
  }

  onMarks(handler: (marks: DeliveredMark[]) => void): void {
    this.takeMarks = handler;
  }

  async relayMarks(nodeId: string, marks: DeliveredMark[]): Promise<void> {
    const take = this.nodes.get(nodeId)?.takeMarks;
    if (!take) throw new WriterMovedError([]);
    const copy = structuredClone(marks.slice(0, MAX_RELAYED_MARKS)); // as marks crossing a network would be
    setImmediate(() => take(copy));
  }

  private async answer(send: ForwardedSend): Promise<SendResult> {
    // A copy, as a send crossing a network would be: the serving node must not share the caller's objects.
    const copy = structuredClone(send);
    try {
      if (!this.serve) throw new WriterMovedError([send.groupId]);
      return structuredClone(await this.serve(copy));
    } catch (err) {
      if (err instanceof WriterMovedError || err instanceof ChorusError) throw err;
      this.options.onInternalError(err, copy);
      throw new ChorusError('INTERNAL');
    }
  }

  async close(): Promise<void> {
    this.nodes.delete(this.nodeId);
    this.serve = undefined;
    this.takeMarks = undefined;
    for (const fail of [...this.waiting]) fail(new ChorusError('STORE_UNAVAILABLE', 'this node is shutting down'));
  }
}
