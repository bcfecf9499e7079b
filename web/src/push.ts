// Web Push: while the user is connected nowhere, the server tells them of missed messages
// through their browser's push service; the service worker (public/sw.js) shows them.
import { api } from './api';

function supported(): boolean {
  return typeof navigator !== 'undefined' && 'serviceWorker' in navigator
    && typeof window !== 'undefined' && 'PushManager' in window
    && typeof Notification !== 'undefined';
}

function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const b64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** Subscribes this browser for the signed-in user, once notifications are allowed. Quietly
 * does nothing where the browser or the server offers no Web Push. */
export async function enablePush(token: string): Promise<boolean> {
  if (!supported() || Notification.permission !== 'granted') return false;
  let key: string;
  try {
    key = await api.vapidPublicKey();
  } catch {
    return false;
  }
  const registration = await navigator.serviceWorker.register('/sw.js');
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  const wanted = keyBytes(key);
  const current = subscription?.options.applicationServerKey;
  // A subscription made for another server key (the server's key changed) cannot be used.
  if (subscription && current && !sameBytes(new Uint8Array(current), wanted)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: wanted });
  await api.subscribePush(token, subscription.toJSON());
  return true;
}

/** Stops pushes to this browser for the user who signs out. */
export async function disablePush(token: string): Promise<void> {
  if (!supported()) return;
  const registration = await navigator.serviceWorker.getRegistration('/');
  const subscription = await registration?.pushManager.getSubscription();
  if (!subscription) return;
  await api.unsubscribePush(token, subscription.endpoint).catch(() => {});
  await subscription.unsubscribe().catch(() => false);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
