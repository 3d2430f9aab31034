import { createServer, type Server } from 'node:http';
import { build } from 'esbuild';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from './chromium.js';
import { TestChorus } from './harness.js';

const PAGE = `<!doctype html><meta charset="utf-8"><title>Chorus SDK in a browser</title>
<script type="module">
  import { ChorusClient, LocalStoragePositionStore } from '/sdk.js';
  window.start = async (options) => {
    const client = await ChorusClient.connect({ ...options, positions: new LocalStoragePositionStore(localStorage) });
    window.received = [];
    client.on('message', (m) => window.received.push(m.seq + ':' + m.body));
    await client.join(options.groupId);
    window.client = client;
    return client.position(options.groupId);
  };
  window.send = async (groupId, body) => (await window.client.send(groupId, { body })).seq;
  window.ready = true;
</script>`;

describe('the SDK in a real browser (Chromium, MQTT over WebSocket)', () => {
  let t: TestChorus;
  let pages: Server;
  let pageOrigin: string;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    const bundle = await build({
      entryPoints: ['clients/index.ts'],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      write: false,
      logLevel: 'silent',
    });
    const sdk = bundle.outputFiles[0]!.text;
    pages = createServer((req, res) => {
      if (req.url === '/sdk.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk);
      else res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    });
    await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', () => resolve()));
    pageOrigin = `http://127.0.0.1:${(pages.address() as { port: number }).port}`;
    t = await TestChorus.start({ corsOrigins: pageOrigin });
    browser = await launchChromium();
    page = await browser.newPage();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    pages?.close();
  });

  const open = async (groupId: string) => {
    await page.goto(pageOrigin);
    await page.waitForFunction(() => (window as any).ready === true);
    const options = {
      mqttUrl: t.chorus.urls.ws,
      apiUrl: t.chorus.urls.http,
      userId: 'alice',
      token: await t.token('alice'),
      groupId,
    };
    return page.evaluate((o) => (window as any).start(o), options);
  };
  const received = () => page.evaluate(() => (window as any).received as string[]);
  const send = (groupId: string, body: string) =>
    t.api('bob', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: body, body });

  it('receives in seq order, sends through the SDK, and resumes after a reload from localStorage without gaps or duplicates', async () => {
    const groupId = await t.group('alice', ['bob']);
    expect(await open(groupId)).toBe(0);
    for (const body of ['one', 'two', 'three']) await send(groupId, body);
    await page.waitForFunction(() => (window as any).received.length === 3);
    expect(await received()).toEqual(['1:one', '2:two', '3:three']);

    const seq = await page.evaluate((g) => (window as any).send(g, 'from the browser'), groupId);
    expect(seq).toBe(4);
    const history = await t.api('bob', 'GET', `/v1/groups/${groupId}/messages?afterSeq=3`);
    expect(history.body.messages).toEqual([
      expect.objectContaining({ seq: 4, senderId: 'alice', body: 'from the browser' }),
    ]);
    await page.waitForFunction(() => (window as any).received.length === 4);

    await page.goto('about:blank'); // the tab goes away: its connection closes
    for (const body of ['five', 'six', 'seven']) await send(groupId, body);
    expect(await open(groupId)).toBe(7); // resumed from the stored position 4 and caught up from history
    expect(await received()).toEqual(['5:five', '6:six', '7:seven']);
    await send(groupId, 'eight');
    await page.waitForFunction(() => (window as any).received.length === 4);
    expect((await received()).at(-1)).toBe('8:eight');
  }, 60_000);

  it('lets only the configured origin call the REST API', async () => {
    const preflight = async (origin: string) =>
      fetch(`${t.chorus.urls.http}/v1/groups`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
      });
    expect((await preflight(pageOrigin)).headers.get('access-control-allow-origin')).toBe(pageOrigin);
    expect((await preflight('https://evil.example')).headers.get('access-control-allow-origin')).toBeNull();
  });
});
