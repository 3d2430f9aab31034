import { mkdirSync } from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import webPush from 'web-push';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import { launchChromium } from './chromium.js';
import { TestChorus } from './harness.js';
import { TestPushService } from './push-service.js';

/** SCREENSHOTS=1 writes the README's screenshots (docs/screenshots); otherwise they go to a temp dir. */
const SHOTS =
  process.env.SCREENSHOTS === '1' ? 'docs/screenshots' : `${process.env.TMPDIR ?? '/tmp'}/chorus-screenshots`;

describe('the web chat served at / (Chromium through playwright-core)', () => {
  let t: TestChorus;
  let browser: Browser;
  let pushService: TestPushService;
  beforeAll(async () => {
    pushService = new TestPushService();
    await pushService.start();
    t = await TestChorus.start({
      sqliteSynchronous: 'normal',
      pushAllowLoopback: true,
      pushCaFile: pushService.caFile,
      pushWindowSeconds: 1,
    });
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    await pushService?.close();
  });

  /** Every context a test opened, closed after it whether it passed or not (a leftover stays online). */
  const contexts: BrowserContext[] = [];
  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((c) => c.close().catch(() => undefined)));
  });
  const signIn = async (
    userId: string,
    viewport = { width: 1100, height: 700 },
  ): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await browser.newContext({ viewport });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(t.chorus.urls.http);
    await page.getByTestId('login-user').fill(userId);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('group-list').waitFor();
    await page.locator('#connection', { hasText: 'online' }).waitFor();
    return { context, page };
  };
  const say = async (page: Page, text: string) => {
    await page.getByTestId('composer').fill(text);
    await page.getByTestId('composer').press('Enter');
  };
  /** The messages a page shows, in the order it shows them: "seq:text" (pending ones have no seq yet). */
  const shown = (page: Page) =>
    page
      .getByTestId('message')
      .evaluateAll((items) =>
        items.map((li) => `${(li as HTMLElement).dataset.seq ?? '?'}:${li.querySelector('.body')?.textContent ?? ''}`),
      );
  const history = async (groupId: string): Promise<StampedMessage[]> =>
    (await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0&limit=1000`)).body.messages;

  it('is served with a strict Content-Security-Policy, and signs in through the development route only', async () => {
    const res = await fetch(`${t.chorus.urls.http}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect((await fetch(`${t.chorus.urls.http}/app.js`)).headers.get('content-type')).toMatch(/javascript/);
    const vapid = webPush.generateVAPIDKeys();
    const production = await TestChorus.start({
      env: 'production',
      jwtSecret: 'x'.repeat(40),
      vapidPublicKey: vapid.publicKey,
      vapidPrivateKey: vapid.privateKey,
    });
    const devToken = (base: string) =>
      fetch(`${base}/dev/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"userId":"mallory"}',
      });
    expect((await devToken(production.chorus.urls.http)).status).toBe(404);
    expect((await fetch(`${production.chorus.urls.http}/`)).status).toBe(200); // the app itself is served
    await production.close();
    expect((await devToken(t.chorus.urls.http)).status).toBe(200);
  });

  it('lets alice and bob chat: each sees every message once, in the same order; unread badges count and clear', async () => {
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    await alice.page.getByTestId('new-group-name').fill('Lunch');
    await alice.page.getByTestId('new-group-members').fill('bob');
    await alice.page.getByTestId('new-group-submit').click();
    const groupItem = bob.page.getByTestId('group-item').filter({ hasText: 'Lunch' });
    await groupItem.waitFor();
    const groupId = (await groupItem.getAttribute('data-group-id'))!;

    await say(alice.page, 'noon?');
    await say(alice.page, 'at the usual place');
    await expect.poll(() => groupItem.getByTestId('unread-badge').textContent()).toBe('2');
    await groupItem.click();
    await expect.poll(() => groupItem.getByTestId('unread-badge').count()).toBe(0);
    await say(bob.page, 'yes @alice');
    await say(alice.page, 'great');
    const expected = ['1:noon?', '2:at the usual place', '3:yes @alice', '4:great'];
    await expect.poll(() => shown(alice.page)).toEqual(expected);
    await expect.poll(() => shown(bob.page)).toEqual(expected);
    expect((await history(groupId)).map((m) => m.body)).toEqual(['noon?', 'at the usual place', 'yes @alice', 'great']);

    mkdirSync(SHOTS, { recursive: true });
    await alice.page.screenshot({ path: `${SHOTS}/desktop.png` });
    const phone = await signIn('bob', { width: 390, height: 760 });
    await phone.page.getByTestId('group-item').filter({ hasText: 'Lunch' }).click();
    await expect.poll(() => shown(phone.page)).toEqual(expected);
    await phone.page.screenshot({ path: `${SHOTS}/phone.png` });
    await Promise.all([alice.context.close(), bob.context.close(), phone.context.close()]);
  }, 60_000);

  it('shows 30 messages sent while bob was away, in order, scrolled to the first unread', async () => {
    const alice = await signIn('alice');
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'Away', members: ['bob'] });
    const groupId = created.body.id as string;
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'before', body: 'before you left' });
    await t.api('bob', 'PUT', `/v1/groups/${groupId}/read`, { seq: 1 });
    const item = alice.page.getByTestId('group-item').filter({ hasText: 'Away' });
    await item.click();
    for (let i = 1; i <= 30; i++) await say(alice.page, `update ${i}`);
    await expect.poll(async () => (await history(groupId)).length).toBe(31);

    const bob = await signIn('bob', { width: 900, height: 500 });
    await bob.page.getByTestId('group-item').filter({ hasText: 'Away' }).click();
    await expect.poll(async () => (await shown(bob.page)).length).toBe(31);
    expect(await shown(bob.page)).toEqual([
      '1:before you left',
      ...Array.from({ length: 30 }, (_, i) => `${i + 2}:update ${i + 1}`),
    ]);
    // The first unread (seq 2) is in view, and the newest is not: the view starts where bob left off.
    const inView = (seq: number) =>
      bob.page.evaluate((s) => {
        const list = document.querySelector('[data-testid="message-list"]')!.getBoundingClientRect();
        const box = document.querySelector(`[data-testid="message"][data-seq="${s}"]`)!.getBoundingClientRect();
        return box.bottom > list.top && box.top < list.bottom;
      }, seq);
    expect(await inView(2)).toBe(true);
    expect(await inView(31)).toBe(false);
    await Promise.all([alice.context.close(), bob.context.close()]);
  }, 90_000);

  it('sends what alice typed while offline once she is back, each message once', async () => {
    const alice = await signIn('alice');
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'Tunnel', members: ['bob'] });
    const groupId = created.body.id as string;
    await alice.page.getByTestId('group-item').filter({ hasText: 'Tunnel' }).click();
    await alice.context.setOffline(true);
    for (const text of ['in the tunnel', 'still here', 'out soon']) await say(alice.page, text);
    await alice.page.waitForTimeout(1500);
    await alice.context.setOffline(false);
    await expect
      .poll(async () => (await history(groupId)).map((m) => m.body), { timeout: 30_000 })
      .toEqual(['in the tunnel', 'still here', 'out soon']);
    await expect
      .poll(() => shown(alice.page), { timeout: 15_000 })
      .toEqual(['1:in the tunnel', '2:still here', '3:out soon']);
    await alice.page.waitForTimeout(1000);
    expect((await history(groupId)).length).toBe(3);
    await alice.context.close();
  }, 60_000);

  it('registers its service worker for the whole origin', async () => {
    const alice = await signIn('alice');
    const scope = await alice.page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
    expect(scope).toBe(`${t.chorus.urls.http}/`);
    await alice.context.close();
  });

  it('shows a notification for a push when no Chorus tab is open (pushed to its service worker through DevTools)', async () => {
    const { context, page } = await signIn('bob');
    await context.grantPermissions(['notifications'], { origin: t.chorus.urls.http });
    const blank = await context.newPage();
    const cdp = await context.newCDPSession(blank);
    const registrations: { registrationId: string; scopeURL: string }[] = [];
    cdp.on(
      'ServiceWorker.workerRegistrationUpdated',
      (e: { registrations: { registrationId: string; scopeURL: string }[] }) => registrations.push(...e.registrations),
    );
    await cdp.send('ServiceWorker.enable');
    await expect.poll(() => registrations.length).toBeGreaterThan(0);
    await page.close(); // no Chorus tab left: the worker shows the push itself
    const push = {
      type: 'chorus.message',
      groupId: 'g_lunch',
      seq: 3,
      senderId: 'alice',
      preview: 'noon?',
      unread: 1,
      count: 1,
      mention: true,
    };
    await cdp.send('ServiceWorker.deliverPushMessage', {
      origin: t.chorus.urls.http,
      registrationId: registrations[0]!.registrationId,
      data: JSON.stringify(push),
    });
    const again = await context.newPage();
    await again.goto(`${t.chorus.urls.http}/app.css`); // an origin page that runs no app code
    const notifications = () =>
      again.evaluate(async () =>
        (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({
          title: n.title,
          body: n.body,
          tag: n.tag,
          data: n.data,
        })),
      );
    await expect
      .poll(notifications)
      .toEqual([{ title: 'alice mentioned you', body: 'noon?', tag: 'g_lunch', data: { groupId: 'g_lunch', seq: 3 } }]);
    await context.close();
  });

  it('reacts, replies, edits and deletes from the conversation, and scrolls back through history without losing its place', async () => {
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'Long', members: ['bob'] });
    const groupId = created.body.id as string;
    for (let i = 1; i <= 120; i++)
      await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: `old-${i}`, body: `old ${i}` });
    await t.api('bob', 'PUT', `/v1/groups/${groupId}/read`, { seq: 120 });
    const bob = await signIn('bob', { width: 900, height: 500 });
    await bob.page.getByTestId('group-item').filter({ hasText: 'Long' }).click();
    await expect.poll(async () => (await shown(bob.page)).length).toBe(50); // the newest page, bob being up to date
    // Scrolling to the top loads the page before, and what was on screen stays where it was.
    const list = bob.page.getByTestId('message-list');
    await list.evaluate((l) => (l.scrollTop = 0));
    await expect.poll(async () => (await shown(bob.page)).length).toBeGreaterThanOrEqual(100);
    // Seq 71 was the top row before the older page came in: it is still near the top. Measured in one evaluation, so
    // that the row cannot be re-rendered between finding it and measuring it.
    const top = await list.evaluate(
      (l) => l.querySelector('[data-seq="71"]')!.getBoundingClientRect().top - l.getBoundingClientRect().top,
    );
    expect(top).toBeGreaterThan(-20);
    expect(top).toBeLessThan(60);
    // Clicking the open group again keeps what is shown. (CI once saw the list emptied here: the app, still filling the
    // group list after sign-in, opened the group in the address again.)
    await bob.page.getByTestId('group-item').filter({ hasText: 'Long' }).click();
    expect((await shown(bob.page)).length).toBeGreaterThanOrEqual(100); // a reopen would have emptied it in the click

    const alice = await signIn('alice');
    await alice.page.getByTestId('group-item').filter({ hasText: 'Long' }).click();
    const newest = bob.page.locator('[data-testid="message"][data-seq="120"]');
    await newest.getByRole('button', { name: 'React 👍 to message 120' }).click();
    await expect
      .poll(() => alice.page.locator('[data-testid="message"][data-seq="120"] .reactions').textContent())
      .toBe('👍 1');
    await newest.getByRole('button', { name: 'Reply to message 120' }).click();
    await say(bob.page, 'replying to the last one');
    await expect
      .poll(async () => (await history(groupId)).at(-1))
      .toMatchObject({ body: 'replying to the last one', replyToSeq: 120 });
    alice.page.once('dialog', (dialog) => void dialog.accept('old 120, edited'));
    await alice.page
      .locator('[data-testid="message"][data-seq="120"]')
      .getByRole('button', { name: 'Edit message 120' })
      .click();
    await expect.poll(() => newest.locator('.body').textContent()).toBe('old 120, edited');
    alice.page.once('dialog', (dialog) => void dialog.accept());
    await alice.page
      .locator('[data-testid="message"][data-seq="119"]')
      .getByRole('button', { name: 'Delete message 119' })
      .click();
    await expect
      .poll(() => bob.page.locator('[data-testid="message"][data-seq="119"] .body').textContent())
      .toBe('This message was deleted');
    await Promise.all([alice.context.close(), bob.context.close()]);
  }, 90_000);

  it("subscribes bob's browser to push from the Notifications button; the test push service then decrypts a push for him while he is away", async () => {
    // Chromium here has no push service to register with (pushManager.subscribe fails offline), so the subscription the
    // browser would get from one is the test push service's: everything after it is the page's and the server's own.
    const device = pushService.device('bob-browser');
    const { context, page } = await signIn('bob');
    await context.grantPermissions(['notifications'], { origin: t.chorus.urls.http });
    await page.evaluate((subscription) => {
      PushManager.prototype.subscribe = async () => ({ toJSON: () => subscription }) as unknown as PushSubscription;
    }, device.subscription);
    await page.getByRole('button', { name: 'Notifications' }).click();
    await expect.poll(() => page.locator('#enable-push').textContent()).toBe('Notifications on');
    const stored = await t.api('bob', 'GET', '/v1/push/subscriptions');
    expect(stored.body.subscriptions.map((s: { endpoint: string }) => s.endpoint)).toEqual([
      device.subscription.endpoint,
    ]);
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'Pushy', members: ['bob'] });
    await context.close(); // bob is away
    await expect
      .poll(
        async () =>
          (await t.api('alice', 'GET', `/v1/groups/${created.body.id}/presence`)).body.members.find(
            (m: { userId: string }) => m.userId === 'bob',
          )?.online,
      )
      .toBe(false);
    await t.api('alice', 'POST', `/v1/groups/${created.body.id}/messages`, {
      clientMsgId: 'push-me',
      body: 'are you there, bob?',
    });
    await expect.poll(() => pushService.pushesTo(device.id).length).toBe(1);
    expect(pushService.pushesTo(device.id)[0]!.payload).toMatchObject({
      type: 'chorus.message',
      groupId: created.body.id,
      senderId: 'alice',
      preview: 'are you there, bob?',
    });
  });

  it('finds a message through the search box, marks the match, and opens the conversation at it', async () => {
    const groupId = await t.group('alice', ['gina']);
    for (let i = 1; i <= 120; i++) {
      const body = i === 7 ? 'the quarterly forecast is attached' : `filler message ${i}`;
      await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: `q${i}`, body });
    }
    // gina has read everything: opening the group loads only its newest page, so reaching 7 takes the search's loads.
    await t.api('gina', 'PUT', `/v1/groups/${groupId}/read`, { seq: 120 });
    const { page } = await signIn('gina');
    await page.getByTestId('search-query').fill('forecast');
    await page.getByTestId('search-query').press('Enter');
    const hit = page.getByTestId('search-hit');
    await hit.first().waitFor();
    expect(await hit.count()).toBe(1);
    expect(await hit.locator('mark').textContent()).toBe('forecast');
    expect(await hit.locator('.snippet').textContent()).toBe('the quarterly forecast is attached');
    await hit.click();
    // The conversation opens at message 7, with what came before it (its page) and after it (up to the newest).
    const found = page.locator('li[data-seq="7"].found');
    await found.waitFor();
    await expect.poll(async () => (await shown(page)).map((line) => Number(line.split(':')[0]))[0]).toBeLessThan(7);
    expect((await shown(page)).at(-1)).toMatch(/^120:/);
    const inView = async () => {
      const box = await found.boundingBox();
      const list = await page.getByTestId('message-list').boundingBox();
      return box !== null && list !== null && box.y >= list.y && box.y + box.height <= list.y + list.height;
    };
    await expect.poll(inView).toBe(true);
  });
});
