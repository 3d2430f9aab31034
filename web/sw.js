// The Chorus service worker: shows a notification for a push when no Chorus tab is focused, and opens the group when
// the notification is clicked. The push payload is Chorus's (see push/notifier.ts): {type, groupId, seq, senderId,
// preview, unread, count, mention}.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  event.waitUntil(
    (async () => {
      let data;
      try {
        data = event.data ? event.data.json() : null;
      } catch {
        data = null;
      }
      if (!data || data.type !== 'chorus.message') return;
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      if (windows.some((w) => w.focused)) return; // the open tab shows it already
      const title = data.count > 1 ? `${data.count} new messages` : `${data.senderId}${data.mention ? ' mentioned you' : ''}`;
      await self.registration.showNotification(title, {
        body: data.preview,
        tag: data.groupId, // a newer push for the group replaces the older notification
        renotify: true,
        data: { groupId: data.groupId, seq: data.seq },
      });
    })(),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = `/#group=${encodeURIComponent(event.notification.data.groupId)}`;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const w of windows) {
        if ('focus' in w) {
          await w.navigate(url).catch(() => undefined);
          return w.focus();
        }
      }
      return self.clients.openWindow(url);
    })(),
  );
});
