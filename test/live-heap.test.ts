import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { selfSizeTotal } from '../bench/live-heap.js';
import { tempDir } from './harness.js';

describe("the bench's live heap: self sizes summed from a heap snapshot's bytes", () => {
  it('reads the nodes array by its fields, whatever their order, and stops at its end', () => {
    const snapshot = Buffer.from(
      '{"snapshot":{"meta":{"node_fields":["type","name","id","self_size","edge_count"],"node_types":[[]]},"node_count":3},\n' +
        '"nodes":[0,1,2,30,0\n,3,4,5,12,1\n,0,7,9,0,0],\n"edges":[1,2,3,4000]}',
    );
    expect(selfSizeTotal(snapshot)).toBe(42);
    expect(() => selfSizeTotal(Buffer.from('{"something":"else"}'))).toThrow(/not a V8 heap snapshot/);
  });

  it('gives what a full parse of a real snapshot of this process gives', () => {
    const file = writeHeapSnapshot(join(tempDir(), 'test.heapsnapshot'));
    try {
      const bytes = readFileSync(file);
      const parsed = JSON.parse(bytes.toString()) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] };
      const stride = parsed.snapshot.meta.node_fields.length;
      const at = parsed.snapshot.meta.node_fields.indexOf('self_size');
      let expected = 0;
      for (let i = at; i < parsed.nodes.length; i += stride) expected += parsed.nodes[i]!;
      expect(expected).toBeGreaterThan(1_000_000);
      expect(selfSizeTotal(bytes)).toBe(expected);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
