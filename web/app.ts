/**
 * The Chorus web chat: one page on the SDK (MQTT over WebSocket, the REST API), served by Chorus itself at `/`.
 * Everything it shows is built with DOM calls and textContent, never from HTML strings: message text is data.
 */
import {
  ChorusApiError,
  ChorusClient,
  LocalStoragePositionStore,
  applyEvent,
  humanSize,
  isEventType,
  type GroupInfo,
  type PushMode,
  type SearchHitView,
  type StampedMessage,
} from '../clients/index.js';

interface Session {
  userId: string;
  token: string;
  /** Seconds since the epoch. */
  expiresAt?: number;
}

interface GroupState {
  info: GroupInfo;
  preview: string;
  unread: number;
  /** The highest seq seen in this group (from the listing, then live). */
  lastSeq: number;
  /** What the group's other members have had delivered and read, as told live (for ✓✓ on my messages). */
  deliveredByOthers: number;
  readByOthers: number;
}

const SESSION_KEY = 'chorus.session';
const PAGE = 50;
const TYPING_SHOWN_MS = 3000;
const READ_DEBOUNCE_MS = 500;

const byId = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const el = <K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

let session: Session | null = null;
let client: ChorusClient | null = null;
const groups = new Map<string, GroupState>();
let current: string | null = null;
/** The open conversation: what it shows, by seq, and its oldest shown seq (for scrolling back). */
let shown = new Map<number, StampedMessage>();
/** Who reacted with what to the messages shown, as seen live (so that a repeated reaction counts once). */
let reactorsOf = new Map<number, Set<string>>();
let oldestShown = Number.POSITIVE_INFINITY;
let olderLoading: Promise<void> | null = null;
let noOlder = false;
const typingNow = new Map<string, number>();
let readTimer: ReturnType<typeof setTimeout> | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | null = null;
/** The message the next send replies to, if any. */
let replyTo: StampedMessage | null = null;

// ---- sign in ----

/** A token handed over by the host app in the URL fragment (#token=...), taken out of the address bar at once. */
function tokenFromFragment(): Session | null {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (!token) return null;
  params.delete('token');
  history.replaceState(null, '', `${location.pathname}${params.size > 0 ? `#${params}` : ''}`);
  try {
    const claims = JSON.parse(atob(token.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/'))) as {
      sub: string;
      exp?: number;
    };
    return { userId: claims.sub, token, ...(claims.exp ? { expiresAt: claims.exp } : {}) };
  } catch {
    return null;
  }
}

/** Development only: the server's /dev/token route (absent in production, where the host app hands a token). */
async function devToken(userId: string): Promise<Session> {
  const res = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
  if (res.status === 404) throw new Error('Sign-in here is for development only: open Chorus from your app.');
  const body = (await res.json()) as { token?: string; expiresAt?: number; message?: string };
  if (!res.ok || !body.token) throw new Error(body.message ?? 'sign-in failed');
  return { userId, token: body.token, ...(body.expiresAt ? { expiresAt: body.expiresAt } : {}) };
}

function showLogin(note = ''): void {
  byId('app').hidden = true;
  byId('login').hidden = false;
  byId('login-note').textContent = note;
  byId<HTMLInputElement>('login-user').focus();
}

/** Before the token expires: a fresh one (development), or the sign-in form again (a token from the host app). */
function scheduleRefresh(): void {
  if (refreshTimer) clearTimeout(refreshTimer);
  if (!session?.expiresAt) return;
  const inMs = Math.max(5_000, (session.expiresAt - 60) * 1000 - Date.now());
  refreshTimer = setTimeout(async () => {
    try {
      session = await devToken(session!.userId);
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
      client?.setToken(session.token);
      scheduleRefresh();
    } catch {
      await client?.close();
      client = null;
      sessionStorage.removeItem(SESSION_KEY);
      showLogin('Your session expired: sign in again.');
    }
  }, inMs);
}

// ---- groups ----

function renderGroups(): void {
  const list = byId('group-list');
  const items = [...groups.values()].sort((a, b) => b.lastSeq - a.lastSeq || a.info.name.localeCompare(b.info.name));
  list.replaceChildren(
    ...items.map((g) => {
      const badge =
        g.unread > 0
          ? [el('span', { className: 'badge', textContent: String(g.unread), title: `${g.unread} unread` })]
          : [];
      if (badge[0]) badge[0].dataset.testid = 'unread-badge';
      const item = el(
        'li',
        { tabIndex: 0, role: 'button' } as Partial<HTMLLIElement>,
        el('span', { className: 'name', textContent: g.info.name }),
        ...badge,
        el('span', { className: 'preview', textContent: g.preview }),
      );
      item.dataset.testid = 'group-item';
      item.dataset.groupId = g.info.id;
      item.setAttribute('aria-label', `${g.info.name}${g.unread > 0 ? `, ${g.unread} unread` : ''}`);
      if (g.info.id === current) item.setAttribute('aria-current', 'true');
      item.addEventListener('click', () => void openGroup(g.info.id));
      item.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          void openGroup(g.info.id);
        }
      });
      return item;
    }),
  );
}

const previewOf = (m: StampedMessage): string =>
  `${m.senderId}: ${m.deletedAt ? '(deleted)' : (m.body ?? (m.attachments?.length ? `📎 ${m.attachments[0]!.name ?? 'attachment'}` : ''))}`;

async function addGroup(info: GroupInfo): Promise<void> {
  const [last] = info.lastSeq > 0 ? await client!.api.messagesBefore(info.id, 1) : [];
  groups.set(info.id, {
    info,
    preview: last ? previewOf(last) : '',
    unread: info.unread,
    lastSeq: info.lastSeq,
    deliveredByOthers: 0,
    readByOthers: 0,
  });
  renderGroups();
  await client!.join(info.id);
}

// ---- the conversation ----

function statusOf(m: StampedMessage, g: GroupState): string {
  if (m.seq <= g.readByOthers) return 'read';
  if (m.seq <= g.deliveredByOthers) return 'delivered';
  return 'sent';
}

function renderMessage(m: StampedMessage): HTMLLIElement {
  const mine = m.senderId === session!.userId;
  const g = groups.get(m.groupId)!;
  const li = el('li', { className: `${mine ? 'mine' : ''} ${m.deletedAt ? 'deleted' : ''}` });
  li.dataset.testid = 'message';
  li.dataset.seq = String(m.seq);
  li.dataset.clientMsgId = m.clientMsgId;
  const time = new Date(m.createdAt);
  const meta = el(
    'div',
    { className: 'meta' },
    el('span', { className: 'sender', textContent: m.senderId }),
    el('time', {
      dateTime: m.createdAt,
      textContent: time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }),
    }),
  );
  if (m.editedAt) meta.append(' (edited)');
  if (mine)
    meta.append(
      el('span', { className: 'status', textContent: statusOf(m, g) === 'sent' ? '✓' : '✓✓', title: statusOf(m, g) }),
    );
  li.append(meta);
  if (m.replyToSeq !== undefined) {
    const target = shown.get(m.replyToSeq);
    li.append(el('div', { className: 'reply', textContent: `↪ ${target ? previewOf(target) : `#${m.replyToSeq}`}` }));
  }
  const body = el('div', { className: 'body' });
  if (m.deletedAt) body.textContent = 'This message was deleted';
  else {
    if (m.mentionEveryone) body.append(el('span', { className: 'mention', textContent: '@everyone' }), ' ');
    // Mentions stand out; everything else is text.
    for (const part of (m.body ?? '').split(/(@[A-Za-z0-9_.@-]+)/)) {
      body.append(
        part.startsWith('@') && m.mentions?.includes(part.slice(1))
          ? el('span', { className: 'mention', textContent: part })
          : part,
      );
    }
  }
  li.append(body);
  for (const a of m.deletedAt ? [] : (m.attachments ?? [])) {
    const link = el('a', {
      href: a.url,
      target: '_blank',
      rel: 'noopener noreferrer',
      textContent: `📎 ${a.name ?? a.url} (${a.mimeType}, ${humanSize(a.sizeBytes)})`,
    });
    li.append(el('div', {}, link));
  }
  if (m.reactions?.length)
    li.append(
      el('div', { className: 'reactions', textContent: m.reactions.map((r) => `${r.emoji} ${r.count}`).join('  ') }),
    );
  if (!m.deletedAt) li.append(messageActions(m, mine, g.info.role === 'admin'));
  return li;
}

/** Reply, react, and (the sender) edit or (the sender or an admin) delete: buttons, so the keyboard reaches them. */
function messageActions(m: StampedMessage, mine: boolean, admin: boolean): HTMLElement {
  const bar = el('span', { className: 'actions' });
  const action = (label: string, name: string, run: () => void) => {
    const button = el('button', { type: 'button', className: 'small quiet', textContent: label, title: name });
    button.setAttribute('aria-label', `${name} message ${m.seq}`);
    button.addEventListener('click', run);
    bar.append(button);
  };
  action('↪', 'Reply to', () => {
    replyTo = m;
    byId('replying').textContent = `Replying to ${previewOf(m)} (Escape cancels)`;
    byId('replying').hidden = false;
    byId<HTMLTextAreaElement>('composer').focus();
  });
  const liked = m.reactions?.some((r) => r.emoji === '👍' && r.mine) ?? false;
  action(
    '👍',
    liked ? 'Take back 👍 from' : 'React 👍 to',
    () => void client!.react(m.groupId, m.seq, '👍', { remove: liked }),
  );
  if (mine) {
    action('✎', 'Edit', () => {
      const body = prompt('Edit your message', m.body ?? '');
      if (body?.trim() && body !== m.body) void client!.edit(m.groupId, m.seq, body.trim());
    });
  }
  if (mine || admin)
    action(
      '🗑',
      'Delete',
      () => confirm('Delete this message for everyone?') && void client!.deleteMessage(m.groupId, m.seq),
    );
  return bar;
}

/** Adds messages to the open conversation in seq order; ones already shown are replaced (an update). */
function show(messages: StampedMessage[], options: { scroll?: 'keep-bottom' | 'keep-place' } = {}): void {
  const list = byId('message-list');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  // The place is kept by a message: the first one in view stays where it is on screen, whatever moved the list.
  const listTop = list.getBoundingClientRect().top;
  const anchor = [...list.querySelectorAll<HTMLLIElement>('li[data-seq]')].find(
    (li) => li.getBoundingClientRect().bottom > listTop,
  );
  const anchorOffset = anchor ? anchor.getBoundingClientRect().top - listTop : 0;
  for (const m of messages) {
    if (isEventType(m.type)) continue; // applied to their targets
    const existing =
      list.querySelector<HTMLLIElement>(`li[data-seq="${m.seq}"]`) ??
      (m.senderId === session!.userId
        ? list.querySelector<HTMLLIElement>(`li.pending[data-client-msg-id="${CSS.escape(m.clientMsgId)}"]`)
        : null);
    const before = shown.get(m.seq);
    if (existing && before && JSON.stringify(before) === JSON.stringify(m)) continue; // the same again (a catch-up)
    shown.set(m.seq, m);
    oldestShown = Math.min(oldestShown, m.seq);
    const node = renderMessage(m);
    if (existing) {
      existing.replaceWith(node);
      continue;
    }
    const after = [...list.querySelectorAll<HTMLLIElement>('li[data-seq]')].find(
      (li) => Number(li.dataset.seq) > m.seq,
    );
    list.insertBefore(node, after ?? list.querySelector('li.pending'));
  }
  if (options.scroll === 'keep-place' && anchor?.isConnected)
    list.scrollTop += anchor.getBoundingClientRect().top - listTop - anchorOffset;
  else if (atBottom) list.scrollTop = list.scrollHeight;
}

async function openGroup(groupId: string): Promise<void> {
  const g = groups.get(groupId);
  // Opening the open group again would clear it and lose the reader's place (and what scrolling back loaded).
  if (!g || current === groupId) return;
  current = groupId;
  cancelReply();
  history.replaceState(null, '', `#group=${encodeURIComponent(groupId)}`);
  byId('app').classList.add('in-conversation');
  byId('conversation').hidden = false;
  byId('members').hidden = true;
  byId('group-name').textContent = g.info.name;
  byId('typing').textContent = '';
  const list = byId('message-list');
  list.replaceChildren();
  shown = new Map();
  reactorsOf = new Map();
  oldestShown = Number.POSITIVE_INFINITY;
  noOlder = false;
  const firstUnread = g.info.readSeq + 1;
  let page = (await client!.api.messagesBefore(groupId, PAGE, undefined, { withReactions: true })).reverse();
  // Enough history to start at the first unread message (up to a few pages).
  for (let i = 0; i < 4 && page.length > 0 && page[0]!.seq > firstUnread && page[0]!.seq > 1; i++) {
    page = [
      ...(await client!.api.messagesBefore(groupId, PAGE, page[0]!.seq, { withReactions: true })).reverse(),
      ...page,
    ];
  }
  if (current !== groupId) return;
  if (page.length < PAGE) noOlder = true;
  show(page);
  const marker = list.querySelector<HTMLLIElement>(`li[data-seq="${firstUnread}"]`);
  if (marker && g.unread > 0) {
    marker.before(
      el('li', {
        className: 'unread-marker',
        textContent: 'New messages',
        role: 'separator',
      } as Partial<HTMLLIElement>),
    );
    marker.scrollIntoView({ block: 'start' });
  } else list.scrollTop = list.scrollHeight;
  void client!.api.pushMode(groupId).then(
    (mode) => (byId<HTMLSelectElement>('push-mode').value = mode),
    () => undefined,
  );
  markReadSoon();
  renderGroups();
  byId<HTMLTextAreaElement>('composer').focus();
}

function closeGroup(): void {
  current = null;
  cancelReply();
  byId('app').classList.remove('in-conversation');
  byId('conversation').hidden = true;
  history.replaceState(null, '', location.pathname);
  renderGroups();
}

/** Loads the page before the oldest shown message; a call while one is loading waits for that one. */
function loadOlder(): Promise<void> {
  if (olderLoading) return olderLoading;
  if (!current || noOlder || !Number.isFinite(oldestShown) || oldestShown <= 1) return Promise.resolve();
  const groupId = current;
  olderLoading = (async () => {
    try {
      const older = await client!.api.messagesBefore(groupId, PAGE, oldestShown, { withReactions: true });
      if (current !== groupId) return;
      if (older.length < PAGE) noOlder = true;
      show(older.reverse(), { scroll: 'keep-place' });
    } finally {
      olderLoading = null;
    }
  })();
  return olderLoading;
}

/**
 * Searches the user's groups (GET /v1/search) and lists the hits with their snippets, matches marked (built with DOM
 * calls: the snippet is data). A hit opens its conversation at that message.
 */
async function runSearch(): Promise<void> {
  const q = byId<HTMLInputElement>('search-query').value.trim();
  const results = byId('search-results');
  if (q === '') {
    results.hidden = true;
    return;
  }
  let hits: SearchHitView[];
  try {
    hits = (await client!.api.searchAll(q, { limit: 20 })).hits;
  } catch (err) {
    results.replaceChildren(el('li', { className: 'note', textContent: (err as Error).message }));
    results.hidden = false;
    return;
  }
  results.replaceChildren(
    ...(hits.length === 0 ? [el('li', { className: 'note', textContent: 'Nothing found' })] : []),
    ...hits.map((hit) => {
      const snippet = el('span', { className: 'snippet' });
      let at = 0;
      for (const [start = 0, end = 0] of hit.highlights) {
        snippet.append(hit.snippet.slice(at, start), el('mark', { textContent: hit.snippet.slice(start, end) }));
        at = end;
      }
      snippet.append(hit.snippet.slice(at));
      const where = el('span', {
        className: 'where',
        textContent: `${groups.get(hit.groupId)?.info.name ?? hit.groupId} · ${hit.senderId} · ${new Date(hit.createdAt).toLocaleString()}`,
      });
      const li = el('li', { tabIndex: 0 } as Partial<HTMLLIElement>);
      li.dataset.testid = 'search-hit';
      li.dataset.groupId = hit.groupId;
      li.dataset.seq = String(hit.seq);
      li.append(where, el('br'), snippet);
      const open = () => void openAt(hit.groupId, hit.seq);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (e) => e.key === 'Enter' && open());
      return li;
    }),
  );
  results.hidden = false;
}

/**
 * Pages of history loaded back to reach a search hit at most: a hit further back is not scrolled to (scrolling back
 * still reaches it).
 */
const MAX_PAGES_TO_HIT = 40;

/**
 * Opens a conversation at message `seq`: the history from it to the newest is loaded (and a page before it, by
 * scrolling back as ever), and the message is scrolled to and marked.
 */
async function openAt(groupId: string, seq: number): Promise<void> {
  if (current !== groupId) await openGroup(groupId);
  for (let i = 0; i < MAX_PAGES_TO_HIT && oldestShown > seq && !noOlder && current === groupId; i++) await loadOlder();
  const target = byId('message-list').querySelector<HTMLLIElement>(`li[data-seq="${seq}"]`);
  if (!target) return;
  target.scrollIntoView({ block: 'center' });
  target.classList.add('found');
  setTimeout(() => target.classList.remove('found'), 3000);
  await loadOlder(); // a page before it, so the hit is seen in its context both ways
  target.scrollIntoView({ block: 'center' });
}

/** The open group is read up to its newest message, once the page is visible (one request per burst). */
function markReadSoon(): void {
  if (readTimer || !current || document.visibilityState !== 'visible') return;
  readTimer = setTimeout(() => {
    readTimer = null;
    const g = current ? groups.get(current) : undefined;
    if (!g || g.lastSeq === 0) return;
    g.unread = 0;
    g.info.readSeq = g.lastSeq;
    renderGroups();
    client!.markRead(g.info.id, g.lastSeq).catch(() => undefined);
  }, READ_DEBOUNCE_MS);
}

async function sendFromComposer(): Promise<void> {
  const composer = byId<HTMLTextAreaElement>('composer');
  const text = composer.value.trim();
  if (!text || !current) return;
  composer.value = '';
  const groupId = current;
  const mentions = [...new Set([...text.matchAll(/@([A-Za-z0-9_.@-]{1,64})/g)].map((m) => m[1]!))]
    .filter((u) => u !== 'everyone')
    .slice(0, 50);
  const clientMsgId = crypto.randomUUID();
  const pending = el(
    'li',
    { className: 'mine pending' },
    el('div', { className: 'meta', textContent: 'sending…' }),
    el('div', { className: 'body', textContent: text }),
  );
  pending.dataset.testid = 'message';
  pending.dataset.clientMsgId = clientMsgId;
  const list = byId('message-list');
  list.append(pending);
  list.scrollTop = list.scrollHeight;
  try {
    // Offline, MQTT.js keeps the publish and sends it on reconnect, and the SDK retries over REST: always this id.
    const reply = replyTo && replyTo.groupId === groupId ? { replyToSeq: replyTo.seq } : {};
    cancelReply();
    await client!.send(groupId, { clientMsgId, body: text, ...reply, ...(mentions.length > 0 ? { mentions } : {}) });
  } catch (err) {
    const meta = pending.querySelector('.meta');
    if (meta) meta.textContent = `not sent: ${err instanceof ChorusApiError ? err.code : (err as Error).message}`;
  }
}

function cancelReply(): void {
  replyTo = null;
  byId('replying').hidden = true;
}

// ---- live events ----

function onMessage(m: StampedMessage): void {
  const g = groups.get(m.groupId);
  if (!g) return;
  const isEvent = isEventType(m.type);
  if (m.seq > g.lastSeq) {
    g.lastSeq = m.seq;
    if (!isEvent) {
      g.preview = previewOf(m);
      if (m.senderId !== session!.userId && m.groupId !== current) g.unread += 1;
    }
  }
  if (m.groupId === current) {
    // An edit, delete or reaction changes the message it names, as shown (history brought it, or the live stream).
    const target = m.targetSeq === undefined ? undefined : shown.get(m.targetSeq);
    let reactors = reactorsOf.get(m.targetSeq ?? 0);
    if (!reactors) reactorsOf.set(m.targetSeq ?? 0, (reactors = new Set()));
    const updated = target ? applyEvent(target, m, session!.userId, reactors) : null;
    show(updated ? [updated] : [m]);
    markReadSoon();
  }
  renderGroups();
}

function refreshStatuses(groupId: string): void {
  if (groupId !== current) return;
  for (const li of byId('message-list').querySelectorAll<HTMLLIElement>('li.mine[data-seq]')) {
    const m = shown.get(Number(li.dataset.seq));
    if (m) li.replaceWith(renderMessage(m));
  }
}

function showTyping(): void {
  const now = Date.now();
  const names = [...typingNow].filter(([, at]) => now - at < TYPING_SHOWN_MS).map(([key]) => key.split('\n')[1]!);
  const text = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
  byId('typing').textContent = text;
}

async function showMembers(): Promise<void> {
  if (!current) return;
  const panel = byId('members');
  const open = panel.hidden;
  panel.hidden = !open;
  byId('show-members').setAttribute('aria-expanded', String(open));
  if (!open) return;
  const [{ members }, presence] = await Promise.all([client!.api.members(current), client!.api.presence(current)]);
  const online = new Set(presence.members.filter((p) => p.online).map((p) => p.userId));
  const admin = groups.get(current)?.info.role === 'admin';
  byId('member-list').replaceChildren(
    ...members.map((m) => {
      const item = el('li', {
        className: online.has(m.userId) ? 'online' : 'offline',
        textContent: `${m.userId}${m.role === 'admin' ? ' (admin)' : ''}`,
      });
      item.setAttribute(
        'aria-label',
        `${m.userId}, ${online.has(m.userId) ? 'online' : 'offline'}${m.role === 'admin' ? ', admin' : ''}`,
      );
      if (admin || m.userId === session!.userId) {
        const remove = el('button', {
          type: 'button',
          className: 'small',
          textContent: m.userId === session!.userId ? 'Leave' : 'Remove',
        });
        remove.addEventListener(
          'click',
          () => void client!.api.removeMember(current!, m.userId).then(() => void showMembers().then(showMembers)),
        );
        item.append(' ', remove);
      }
      return item;
    }),
  );
  byId('add-member').hidden = !admin;
}

async function enablePush(): Promise<void> {
  const button = byId<HTMLButtonElement>('enable-push');
  try {
    const registration = await navigator.serviceWorker.ready;
    if ((await Notification.requestPermission()) !== 'granted') throw new Error('permission refused');
    const key = await client!.api.vapidPublicKey();
    const raw = Uint8Array.from(atob(key.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: raw });
    const json = subscription.toJSON() as { endpoint: string; keys: { p256dh: string; auth: string } };
    await client!.api.addPushSubscription({ endpoint: json.endpoint, keys: json.keys });
    button.textContent = 'Notifications on';
  } catch (err) {
    button.textContent = 'Notifications unavailable';
    button.title = (err as Error).message;
  }
}

// ---- start ----

async function start(s: Session): Promise<void> {
  // After a session expired: the next one (maybe another user) starts from nothing the last one showed, even when it
  // has no groups to fill the list with.
  groups.clear();
  if (current)
    closeGroup(); // renders the emptied list
  else renderGroups();
  session = s;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  byId('login').hidden = true;
  byId('app').hidden = false;
  byId('me').textContent = s.userId;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  client = await ChorusClient.connect({
    mqttUrl: `${scheme}://${location.host}/mqtt`,
    apiUrl: location.origin,
    userId: s.userId,
    token: s.token,
    positions: new LocalStoragePositionStore(localStorage),
  });
  scheduleRefresh();
  const status = byId('connection');
  status.textContent = 'online';
  client.on('connect', () => (status.textContent = 'online'));
  client.on('offline', () => (status.textContent = 'offline, reconnecting…'));
  client.on('message', onMessage);
  client.on('typing', ({ groupId, userId }) => {
    if (groupId !== current) return;
    typingNow.set(`${groupId}\n${userId}`, Date.now());
    showTyping();
    setTimeout(showTyping, TYPING_SHOWN_MS + 50);
  });
  client.on('delivered', ({ groupId, userId, seq }) => {
    const g = groups.get(groupId);
    if (!g || userId === s.userId || seq <= g.deliveredByOthers) return;
    g.deliveredByOthers = seq;
    refreshStatuses(groupId);
  });
  client.on('read', ({ groupId, userId, seq }) => {
    const g = groups.get(groupId);
    if (!g || userId === s.userId || seq <= g.readByOthers) return;
    g.readByOthers = seq;
    refreshStatuses(groupId);
  });
  client.on('event', (event) => {
    if (event.type === 'member-added' && event.userId === s.userId)
      void client!.api.getGroup(event.groupId).then(addGroup);
    else if ((event.type === 'member-removed' && event.userId === s.userId) || event.type === 'group-deleted') {
      groups.delete(event.groupId);
      if (current === event.groupId) closeGroup();
      renderGroups();
    } else if (event.type === 'group-updated') {
      const g = groups.get(event.groupId);
      if (g) g.info.name = event.name;
      if (current === event.groupId) byId('group-name').textContent = event.name;
      renderGroups();
    }
  });
  const wanted = new URLSearchParams(location.hash.slice(1)).get('group');
  for (const info of await client.api.listGroups()) await addGroup(info);
  // The list is clickable while it fills: a group the user opened meanwhile wins over the one in the address.
  if (wanted && current === null && groups.has(wanted)) await openGroup(wanted);
}

function wire(): void {
  byId('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const userId = byId<HTMLInputElement>('login-user').value.trim();
    devToken(userId).then(start, (err: Error) => showLogin(err.message));
  });
  byId('new-group').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = byId<HTMLInputElement>('new-group-name').value.trim();
    const members = byId<HTMLInputElement>('new-group-members')
      .value.split(/[\s,]+/)
      .filter(Boolean);
    client!.api.createGroup(name, members).then(
      async (info) => {
        byId<HTMLInputElement>('new-group-name').value = '';
        byId<HTMLInputElement>('new-group-members').value = '';
        if (!groups.has(info.id)) await addGroup(info);
        await openGroup(info.id);
      },
      (err: Error) => alert(err.message),
    );
  });
  const composer = byId<HTMLTextAreaElement>('composer');
  composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void sendFromComposer();
    }
  });
  composer.addEventListener('input', () => current && client?.typing(current));
  byId('composer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void sendFromComposer();
  });
  byId('message-list').addEventListener('scroll', () => {
    if (byId('message-list').scrollTop < 80) void loadOlder();
  });
  byId('back').addEventListener('click', closeGroup);
  byId('search').addEventListener('submit', (e) => {
    e.preventDefault();
    void runSearch();
  });
  byId('show-members').addEventListener('click', () => void showMembers());
  byId('add-member').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = byId<HTMLInputElement>('add-member-id');
    if (current && input.value.trim())
      void client!.api.addMember(current, input.value.trim()).then(
        () => {
          input.value = '';
          byId('members').hidden = true;
          return showMembers();
        },
        (err: Error) => alert(err.message),
      );
  });
  byId('push-mode').addEventListener('change', () => {
    if (current) void client!.api.setPushMode(current, byId<HTMLSelectElement>('push-mode').value as PushMode);
  });
  byId('enable-push').addEventListener('click', () => void enablePush());
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (replyTo) cancelReply();
    else if (!byId('members').hidden) byId('members').hidden = true;
    else if (current) closeGroup();
  });
  document.addEventListener('visibilitychange', markReadSoon);
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js').catch(() => undefined);
}

wire();
const handed = tokenFromFragment();
const stored = sessionStorage.getItem(SESSION_KEY);
const resumed = handed ?? (stored ? (JSON.parse(stored) as Session) : null);
if (resumed && (!resumed.expiresAt || resumed.expiresAt * 1000 > Date.now() + 5000))
  start(resumed).catch((err: Error) => showLogin(err.message));
else showLogin();
