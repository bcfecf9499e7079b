// ScalifyChat's service worker: shows the notifications the server sends through Web Push
// while the user is connected nowhere, and opens the room when one is clicked.
//
// A push carries a summary (docs/notifications.md): {room: {name, kind}, count, mentions,
// from: {username}, preview?}. One notification per room: a newer one replaces it.

function roomUrl(s) {
  return s.room.kind === 'dm'
    ? `/dm/${encodeURIComponent(s.from.username)}`
    : `/r/${encodeURIComponent(s.room.name)}`;
}

self.addEventListener('push', (event) => {
  let s;
  try {
    s = event.data.json();
  } catch {
    return;
  }
  if (!s || !s.room || !s.from) return;
  const title = s.room.kind === 'dm' ? s.from.username : `#${s.room.name}`;
  const more = s.count > 1 ? ` (+${s.count - 1} more)` : '';
  const body = s.preview !== undefined
    ? `${s.room.kind === 'dm' ? '' : `${s.from.username}: `}${s.preview}${more}`
    : `${s.count} new message${s.count > 1 ? 's' : ''} from ${s.from.username}${s.count > 1 ? ' and others' : ''}`;
  event.waitUntil(self.registration.showNotification(title, {
    body,
    tag: `room:${s.room.name}`,
    data: { url: roomUrl(s) },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || '/';
  event.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: 'window' });
    const tab = open.find((c) => new URL(c.url).origin === self.location.origin);
    if (!tab) {
      await self.clients.openWindow(url);
      return;
    }
    // The app routes by its address: loading the room's opens it.
    const moved = await tab.navigate(url).catch(() => null);
    await (moved || tab).focus().catch(() => {});
  })());
});

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
