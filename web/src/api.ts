// The REST API (docs/openapi.yaml). Every error answers {error:{code,message}}.
import type { Attachment, Message, NotifyLevel, Receipt, UserRef } from './state';

export interface Session {
  token: string;
  user: UserRef;
}

export interface RoomInfo {
  id: string;
  name: string;
  kind: 'public' | 'private' | 'dm';
  last_seq: number;
  member: boolean;
  /** A DM's other user. */
  peer?: { id: string; username: string };
  /** A member's read marker, and how many messages of others follow it (at most 100). */
  last_read?: number;
  unread?: number;
  /** Of those, how many mention the member or the room (in a DM, all of them; at most 100). */
  mentions?: number;
  /** The member's notification level. */
  notifications?: NotifyLevel;
}

/** What a `join` answers besides the room (docs/protocol.md). */
export interface JoinAck {
  room: RoomInfo;
  online: UserRef[];
  last_read: number;
  unread: number;
  mentions?: number;
  notifications?: NotifyLevel;
  /** How far the other members have read; absent when we turned receipts off. */
  receipts?: Receipt[];
}

/** The user's own settings. */
export interface Settings {
  /** Others see how far we have read, and we see how far they have. */
  read_receipts: boolean;
  /** Notifications may quote the message. */
  previews: boolean;
}

export interface RoomActivity {
  room: string;
  messages: number;
}

export interface NodeStatus {
  node: string;
  started_at: number;
  uptime_secs: number;
  connections: number;
  users: number;
  rooms: number;
  messages_per_sec: number;
  busiest: RoomActivity[];
}

/** A persister of the durable pipeline (Kafka → PostgreSQL), as it last announced itself. */
export interface PersisterStatus {
  id: string;
  paused: boolean;
  partitions: number[];
  /** Messages not yet written to PostgreSQL, by partition. */
  lag: Record<string, number>;
  persisted: number;
  dead_lettered: number;
  retries: number;
  restarts: number;
  updated_at: number;
}

export interface Overview {
  node: string;
  persisters: PersisterStatus[];
  nodes: NodeStatus[];
  messages_per_sec: number;
  busiest: RoomActivity[];
  checks: Record<string, { ok: boolean; error?: string }>;
  errors: { ts: number; level: string; target: string; message: string }[];
}

/** A search hit: the message as it stands now, and the words around the match. */
export interface SearchHit {
  message: Message;
  fragment: string;
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function waitText(secs: number): string {
  if (secs < 60) return `${secs} s`;
  const min = Math.ceil(secs / 60);
  return min < 60 ? `${min} min` : `${Math.ceil(min / 60)} h`;
}

async function request<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw failure(res.status, data, 'request');
  return data as T;
}

/** The error an answer of `status` with body `data` ({error:{code,message,retry_after?}}, or
 * anything else from a proxy) stands for; `what` names the request when the body says nothing. */
function failure(status: number, data: unknown, what: string): ApiError {
  const e = (data as { error?: { code?: string; message?: string; retry_after?: number } } | undefined)?.error ?? {};
  let message = e.message ?? `${what} failed (${status})`;
  // A throttled request says when it may succeed.
  if (typeof e.retry_after === 'number') message += ` — try again in ${waitText(e.retry_after)}`;
  return new ApiError(status, e.code ?? 'internal', message);
}

/** An upload under way: its answer, and a way to stop it. */
export interface Upload {
  done: Promise<Attachment>;
  abort(): void;
}

/**
 * Sends `file` to `room` as the request body, streamed by the browser (XMLHttpRequest: fetch
 * cannot report an upload's progress). `onProgress` gets the fraction sent, 0 to 1.
 */
export function upload(token: string, room: string, file: File, onProgress: (sent: number) => void): Upload {
  const xhr = new XMLHttpRequest();
  const done = new Promise<Attachment>((resolve, reject) => {
    xhr.open('POST', `/api/rooms/${encodeURIComponent(room)}/uploads?${new URLSearchParams({ name: file.name || 'pasted file' })}`);
    xhr.setRequestHeader('authorization', `Bearer ${token}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data: { upload?: Attachment } = {};
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON: a proxy's page */ }
      if (xhr.status === 201 && data.upload) resolve(data.upload);
      else reject(failure(xhr.status, data, 'upload'));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload could not reach the server.'));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'Upload cancelled.'));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}

/** A room's file (or its preview) as a Blob: downloads need the token, which an <img src>
 * or a link cannot carry. */
export async function fileBlob(token: string, room: string, id: string, preview: boolean): Promise<Blob> {
  const res = await fetch(`/api/rooms/${encodeURIComponent(room)}/uploads/${encodeURIComponent(id)}${preview ? '/preview' : ''}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (!res.ok) throw failure(res.status, await res.json().catch(() => ({})), 'download');
  return res.blob();
}

export const api = {
  register: (username: string, password: string) => request<Session>('POST', '/api/auth/register', { username, password }),
  login: (username: string, password: string) => request<Session>('POST', '/api/auth/login', { username, password }),
  /** Ends this token's session on the server: its sockets close everywhere. */
  logout: (token: string) => request<void>('POST', '/api/auth/logout', undefined, token),
  me: (token: string) => request<{ user: UserRef; admin: boolean; limits?: { max_message_bytes: number; max_upload_bytes?: number } }>('GET', '/api/me', undefined, token),
  overview: (token: string) => request<Overview>('GET', '/api/admin/overview', undefined, token),
  rooms: (token: string) => request<{ rooms: RoomInfo[] }>('GET', '/api/rooms', undefined, token).then((r) => r.rooms),
  createRoom: (token: string, name: string, kind: 'public' | 'private') =>
    request<{ room: RoomInfo }>('POST', '/api/rooms', { name, kind }, token).then((r) => r.room),
  addMember: (token: string, room: string, username: string) =>
    request<unknown>('POST', `/api/rooms/${encodeURIComponent(room)}/members`, { username }, token),
  openDm: (token: string, username: string) =>
    request<{ room: RoomInfo }>('POST', '/api/dms', { username }, token).then((r) => r.room),
  members: (token: string, room: string) =>
    request<{ members: UserRef[]; owner: string | null }>('GET', `/api/rooms/${encodeURIComponent(room)}/members`, undefined, token),
  leaveRoom: (token: string, room: string) =>
    request<void>('POST', `/api/rooms/${encodeURIComponent(room)}/leave`, undefined, token),
  removeMember: (token: string, room: string, username: string) =>
    request<void>('DELETE', `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(username)}`, undefined, token),
  block: (token: string, username: string) => request<void>('POST', '/api/blocks', { username }, token),
  logoutAll: (token: string) => request<void>('POST', '/api/auth/logout-all', undefined, token),
  changePassword: (token: string, current_password: string, new_password: string) =>
    request<void>('PUT', '/api/me/password', { current_password, new_password }, token),
  deleteAccount: (token: string, password: string) => request<void>('DELETE', '/api/me', { password }, token),
  setLevel: (token: string, room: string, level: NotifyLevel) =>
    request<{ room: string; level: NotifyLevel }>('PUT', `/api/rooms/${encodeURIComponent(room)}/notifications`, { level }, token),
  settings: (token: string) => request<Settings>('GET', '/api/me/settings', undefined, token),
  changeSettings: (token: string, patch: Partial<Settings>) => request<Settings>('PUT', '/api/me/settings', patch, token),
  /** The server's VAPID public key (404 when it offers no Web Push). */
  vapidPublicKey: () => request<{ key: string }>('GET', '/api/push/vapid-public-key').then((r) => r.key),
  subscribePush: (token: string, subscription: PushSubscriptionJSON) =>
    request<unknown>('POST', '/api/push/subscriptions', { endpoint: subscription.endpoint, keys: subscription.keys }, token),
  unsubscribePush: (token: string, endpoint: string) =>
    request<void>('DELETE', '/api/push/subscriptions', { endpoint }, token),
  /** Messages of my rooms (or of `room`) matching `q`, newest first; `before`: the last hit's id. */
  search: (token: string, q: string, opts: { room?: string; before?: string } = {}) => {
    const params = new URLSearchParams({ q, limit: '20' });
    if (opts.room) params.set('room', opts.room);
    if (opts.before) params.set('before', opts.before);
    return request<{ results: SearchHit[]; has_more: boolean; words: string[] }>('GET', `/api/search?${params}`, undefined, token);
  },
  history: (token: string, room: string, before?: number) =>
    request<{ messages: Message[]; has_more: boolean }>(
      'GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=50${before ? `&before_seq=${before}` : ''}`, undefined, token),
};
