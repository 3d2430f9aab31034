import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChorusApi } from '../clients/chorus-api.js';
import { CLI, TestChorus, until } from './harness.js';

describe('search over REST', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ sqliteSynchronous: 'normal' });
  });
  afterAll(async () => {
    await t.close();
  });

  const send = async (userId: string, groupId: string, clientMsgId: string, body: string) => {
    const res = await t.api(userId, 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId, body });
    expect(res.status).toBe(201);
    return res.body.seq as number;
  };
  const search = (userId: string, path: string) => t.api(userId, 'GET', path);

  it("finds a group's messages newest first, with snippets, pages by seq, and never what was deleted or edited away", async () => {
    const groupId = await t.group('alice', ['bob']);
    for (let i = 1; i <= 5; i++) await send('alice', groupId, `d${i}`, `deploy number ${i} done`);
    await send('bob', groupId, 'other', 'lunch?');
    const secret = await send('alice', groupId, 'secret', 'deploy secret keys');
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'del',
      type: 'delete',
      targetSeq: secret,
    });
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'ed',
      type: 'edit',
      targetSeq: 1,
      body: 'rollout one',
    });
    const first = await search('bob', `/v1/groups/${groupId}/search?q=deploy&limit=2`);
    expect(first.status).toBe(200);
    expect(first.body.hits.map((h: { seq: number }) => h.seq)).toEqual([5, 4]);
    expect(first.body.hits[0]).toMatchObject({
      groupId,
      senderId: 'alice',
      snippet: 'deploy number 5 done',
      highlights: [[0, 6]],
    });
    const second = await search('bob', `/v1/groups/${groupId}/search?q=deploy&limit=2&beforeSeq=${first.body.next}`);
    expect(second.body.hits.map((h: { seq: number }) => h.seq)).toEqual([3, 2]);
    const last = await search('bob', `/v1/groups/${groupId}/search?q=deploy&limit=2&beforeSeq=${second.body.next}`);
    expect(last.body.hits).toEqual([]); // 1 was edited away, the secret deleted
    expect(
      (await search('bob', `/v1/groups/${groupId}/search?q=rollout`)).body.hits.map((h: { seq: number }) => h.seq),
    ).toEqual([1]);
    expect((await search('bob', `/v1/groups/${groupId}/search?q=secret`)).body.hits).toEqual([]);
  });

  it('keeps to membership and history visibility: a since-joined member never finds what came before', async () => {
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'private', historyVisibility: 'since-joined' });
    const groupId = created.body.id as string;
    await send('alice', groupId, 'before', 'launch plan draft');
    expect((await search('carol', `/v1/groups/${groupId}/search?q=launch`)).status).toBe(403);
    await t.api('alice', 'POST', `/v1/groups/${groupId}/members`, { userId: 'carol' });
    await send('alice', groupId, 'after', 'launch plan final');
    const found = await search('carol', `/v1/groups/${groupId}/search?q=launch`);
    expect(found.body.hits.map((h: { snippet: string }) => h.snippet)).toEqual(['launch plan final']);
  });

  it("searches across the caller's groups, newest first, paged by cursor", async () => {
    const [a, b] = [await t.group('dave', ['erin']), await t.group('dave')];
    await send('dave', a, 'a1', 'quarterly numbers A1');
    await send('dave', b, 'b1', 'quarterly numbers B1');
    await send('dave', a, 'a2', 'quarterly numbers A2');
    const first = await search('dave', '/v1/search?q=quarterly&limit=2');
    expect(first.body.hits.map((h: { snippet: string }) => h.snippet)).toEqual([
      'quarterly numbers A2',
      'quarterly numbers B1',
    ]);
    const rest = await search('dave', `/v1/search?q=quarterly&limit=2&after=${encodeURIComponent(first.body.next)}`);
    expect(rest.body.hits.map((h: { snippet: string }) => h.snippet)).toEqual(['quarterly numbers A1']);
    expect(rest.body.next).toBeUndefined();
    // erin is a member of one of the two groups only
    expect(
      (await search('erin', '/v1/search?q=quarterly')).body.hits.map((h: { groupId: string }) => h.groupId),
    ).toEqual([a, a]);
  });

  it('answers bad queries with INVALID_QUERY or VALIDATION_FAILED, never a server error', async () => {
    const groupId = await t.group('alice');
    for (const [q, code] of [
      ['"unbalanced', 'INVALID_QUERY'],
      ['size:big', 'INVALID_QUERY'],
      ['from:alice', 'INVALID_QUERY'],
      ['before:2026-13-01 x', 'INVALID_QUERY'],
      ['x'.repeat(300), 'VALIDATION_FAILED'],
      ['', 'VALIDATION_FAILED'],
      ['AND OR NOT NEAR( *', 'INVALID_QUERY'],
    ] as const) {
      const res = await search('alice', `/v1/groups/${groupId}/search?q=${encodeURIComponent(q)}`);
      expect([res.status, res.body.code], q).toEqual([400, code]);
    }
    // FTS5's own syntax is only words here: it never reaches the index as syntax.
    const res = await search(
      'alice',
      `/v1/groups/${groupId}/search?q=${encodeURIComponent('NEAR(deploy) OR "x" AND')}`,
    );
    expect(res.status).toBe(200);
  });

  it('is in the SDK (api.search, api.searchAll) and the terminal chat (/search)', async () => {
    const groupId = await t.group('frank');
    await send('frank', groupId, 'f1', 'the release notes are ready');
    await send('frank', groupId, 'f2', 'unrelated');
    const api = new ChorusApi(t.chorus.urls.http, await t.token('frank'));
    expect((await api.search(groupId, 'releas*')).hits.map((h) => h.snippet)).toEqual(['the release notes are ready']);
    expect((await api.searchAll('"release notes"')).hits.map((h) => h.groupId)).toEqual([groupId]);
    const chat = spawn(
      process.execPath,
      [
        CLI,
        'chat',
        groupId,
        '--user',
        'frank',
        '--token',
        await t.token('frank'),
        '--mqtt',
        t.chorus.urls.mqtt,
        '--api',
        t.chorus.urls.http,
      ],
      {
        env: { ...process.env, CHORUS_DATA_DIR: t.config.dataDir },
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    let output = '';
    chat.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await until(() => output.includes('joined'), 'the chat to join');
    chat.stdin!.write('/search release\n');
    await until(() => output.includes('— ['), 'the search lines');
    expect(output).toMatch(/— \[1\] frank \d{4}-\d{2}-\d{2} \d{2}:\d{2}: the release notes are ready/);
    chat.kill();
  });
});
