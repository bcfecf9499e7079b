// Client state logic, free of the DOM and the network so it can be unit-tested: merging and
// deduplicating messages, the recovery rule (a jump in `seq` means "sync from the last
// contiguous seq"), pending → sent → failed sends, unread and mention counts, what notifies,
// where read receipts show, grouping for display.

export interface UserRef {
  id: string;
  username: string;
}

/** A committed message, exactly as the server sends it (docs/protocol.md). */
export interface Message {
  id: string;
  room: string;
  seq: number;
  sender: UserRef;
  text: string;
  client_id: string;
  ts: number;
  /** Ids of the members the text mentions (always sent; absent only in data older than it). */
  mentions?: string[];
  /** The text mentions the whole room (`@room`, where the sender may page everyone). */
  mention_room?: boolean;
  /** A message, or a change to the message `relates_to` names (absent in data older than it). */
  kind?: EntryKind;
  relates_to?: string;
  relates_seq?: number;
  /** A reply: the answered message as it stands. */
  reply_to?: ReplyPreview;
  /** The file the message carries (gone once it is deleted). */
  attachment?: Attachment;
  /** Bundled state (history, sync) — and, here, what live changes did since. */
  edited_at?: number;
  deleted?: boolean;
  reactions?: Record<string, { count: number; me: boolean }>;
}

export type EntryKind = 'message' | 'edit' | 'delete' | 'reaction' | 'unreaction';

/** A file uploaded to a room (docs/protocol.md, "Attachments"): its bytes are at
 * `/api/rooms/{room}/uploads/{id}`, an image's preview (width and height set) at `…/preview`. */
export interface Attachment {
  id: string;
  name: string;
  size: number;
  /** As the server found it from the bytes. */
  content_type: string;
  width?: number;
  height?: number;
}

/** `bytes` for people: "512 B", "1.5 KB", "10 MB" (powers of 1024, as file managers show). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let n = bytes;
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  const digits = u === 0 || n >= 10 ? 0 : 1;
  return `${n.toFixed(digits).replace(/\.0$/, '')} ${units[u]}`;
}

/** The size an image's preview is shown at: its own, scaled down to fit `edge` × `edge`. */
export function previewBox(a: Attachment, edge = 320): { width: number; height: number } | undefined {
  if (!a.width || !a.height) return undefined;
  const scale = Math.min(1, edge / Math.max(a.width, a.height));
  return { width: Math.max(1, Math.round(a.width * scale)), height: Math.max(1, Math.round(a.height * scale)) };
}

export interface ReplyPreview {
  id: string;
  seq: number;
  sender: UserRef;
  text: string;
  deleted?: boolean;
}

/** A message someone wrote (not a change to one): what the timeline shows and counts. */
export function isMessage(m: Message): boolean {
  return (m.kind ?? 'message') === 'message';
}

/** What of a room notifies its member: every message of others, mentions (and every DM
 * message), or nothing (muted). */
export type NotifyLevel = 'all' | 'mentions' | 'none';

/** How far another member has read a room. */
export interface Receipt {
  user: UserRef;
  seq: number;
}

export type SendStatus = 'pending' | 'failed';

/** A message of ours the server has not acknowledged yet (or refused). */
export interface Outgoing {
  client_id: string;
  text: string;
  /** The message it answers, if it is a reply. */
  reply_to?: ReplyPreview;
  /** The file it carries, already uploaded. */
  attachment?: Attachment;
  ts: number;
  status: SendStatus;
  error?: string;
  /** The failure may pass on a later attempt (no answer, a node shutting down, a rate limit):
   * such a send is made again, with the same client_id, when the connection comes back. */
  retryable?: boolean;
}

export interface RoomView {
  name: string;
  kind: 'public' | 'private' | 'dm';
  /** Committed messages known here, ascending by seq, one per id. */
  messages: Message[];
  /** Our sends not yet acknowledged, in the order they were made. */
  outgoing: Outgoing[];
  /** Highest seq such that every message 1..seq (or since `floor`) is known: where sync starts. */
  contiguous: number;
  /** The room's newest seq as far as we know (from the room list, acks and live messages). */
  lastSeq: number;
  /** Older history exists below the oldest loaded message. */
  hasMore: boolean;
  /** Everything up to this seq has been seen by the user. */
  lastRead: number;
  /** The server's count of unread messages of others, at its `lastRead` and `lastSeq`: it
   * covers messages this page has not loaded. */
  counted?: { lastRead: number; lastSeq: number; unread: number; mentions?: number };
  /** Our notification level here (the server's; `all` until it says). */
  level?: NotifyLevel;
  /** How far the other members have read, by user id (from the join and `receipt` events). */
  receipts?: Record<string, Receipt>;
  /** Set while the view shows an older stretch of the log (a far search hit or link): the
   * seq it ends at. Newer messages are kept but not shown, and nothing is marked read, until
   * the reader jumps back to the newest ones (`toLatest`). */
  windowEnd?: number;
}

export function emptyRoom(name: string, kind: RoomView['kind'], lastSeq = 0, lastRead = 0): RoomView {
  return {
    name,
    kind,
    messages: [],
    outgoing: [],
    contiguous: lastSeq,
    lastSeq,
    hasMore: lastSeq > 0,
    lastRead: Math.min(lastRead, lastSeq),
  };
}

/**
 * Applies a change entry to the message it names, by the log-replay rules of
 * docs/protocol.md; the message as it then stands (the same object when nothing changes).
 * Reactions are counted from the bundled counts: another member's repeated reaction (which
 * the server ignores) is counted twice until the room is loaded again.
 */
export function applyChange(target: Message, change: Message, me?: string): Message {
  if (!isMessage(target) || change.relates_to !== target.id) return target;
  switch (change.kind) {
    case 'edit':
      if (target.deleted || change.sender.id !== target.sender.id) return target;
      return { ...target, text: change.text, edited_at: change.ts };
    case 'delete':
      return target.deleted ? target : { ...target, text: '', deleted: true, reactions: undefined, attachment: undefined };
    case 'reaction':
    case 'unreaction': {
      if (target.deleted) return target;
      const mine = change.sender.id === me;
      const had = target.reactions?.[change.text] ?? { count: 0, me: false };
      const adds = change.kind === 'reaction';
      if (mine && had.me === adds) return target;
      const now = { count: Math.max(0, had.count + (adds ? 1 : -1)), me: mine ? adds : had.me };
      const reactions = { ...target.reactions };
      if (now.count === 0) delete reactions[change.text];
      else reactions[change.text] = now;
      return { ...target, reactions: Object.keys(reactions).length ? reactions : undefined };
    }
    default:
      return target;
  }
}

/** What a reply quotes of `m`: its first line, or nothing once deleted (as the server does). */
export function previewOf(m: Message): ReplyPreview {
  const line = m.deleted ? '' : (m.text.split('\n').map((l) => l.trim()).find((l) => l) ?? '');
  return { id: m.id, seq: m.seq, sender: m.sender, text: line, ...(m.deleted ? { deleted: true } : {}) };
}

/**
 * Merges entries into a sorted, id-unique list. Returns the same array if nothing changed.
 * A change new to the list is applied to the message it names — unless `bundled` (history and
 * sync answers, whose messages already carry every change made before the answer) brought
 * that message too. A bundled message replaces the copy the list had: it is the newer state.
 */
export function mergeMessages(existing: Message[], incoming: Message[], { me, bundled = false }: { me?: string; bundled?: boolean } = {}): Message[] {
  if (incoming.length === 0) return existing;
  const byId = new Map(existing.map((m) => [m.id, m]));
  const fresh = new Set<string>();
  let changed = false;
  for (const m of incoming) {
    const had = byId.get(m.id);
    if (!had || (bundled && isMessage(m) && had !== m)) {
      byId.set(m.id, m);
      changed = true;
      if (bundled && isMessage(m)) fresh.add(m.id);
    }
    if (!had && !isMessage(m) && m.relates_to && !fresh.has(m.relates_to)) {
      const target = byId.get(m.relates_to);
      const now = target && applyChange(target, m, me);
      if (target && now && now !== target) {
        byId.set(target.id, now);
        // Replies quote it as it now stands.
        if (now.text !== target.text || now.deleted !== target.deleted) {
          for (const r of byId.values()) {
            if (r.reply_to?.id === now.id) byId.set(r.id, { ...r, reply_to: previewOf(now) });
          }
        }
      }
    }
  }
  if (!changed) return existing;
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * Adds messages (live, from an ack, from sync or history — `bundled` for the last two) to a
 * room. A message of ours that arrives removes its outgoing placeholder (matched by
 * client_id), so it is shown once.
 */
export function addMessages(room: RoomView, incoming: Message[], me?: string, bundled = false): RoomView {
  const messages = mergeMessages(room.messages, incoming, { me, bundled });
  const mine = new Set(incoming.filter((m) => m.sender.id === me).map((m) => m.client_id));
  const outgoing = mine.size ? room.outgoing.filter((o) => !mine.has(o.client_id)) : room.outgoing;
  if (messages === room.messages && outgoing === room.outgoing) return room;
  let contiguous = room.contiguous;
  const seqs = new Set(messages.map((m) => m.seq));
  while (seqs.has(contiguous + 1)) contiguous++;
  const lastSeq = Math.max(room.lastSeq, ...incoming.map((m) => m.seq));
  return { ...room, messages, outgoing, contiguous, lastSeq };
}

/**
 * After a complete (not truncated) `sync`, the server has returned every message after the
 * room's contiguous seq: a seq below the newest one returned that is still absent does not
 * exist (in durable mode a node that dies mid-send can leave one unused), so stop waiting for it.
 */
export function syncedThrough(room: RoomView, newest: number): RoomView {
  return newest > room.contiguous ? { ...room, contiguous: newest } : room;
}

/** True when a live message shows that messages before it were missed: call `sync`. */
export function hasGap(room: RoomView): boolean {
  return room.lastSeq > room.contiguous;
}

/** Older messages from `history`: merged, and whether more exist below them. */
export function addHistory(room: RoomView, older: Message[], hasMore: boolean, me?: string): RoomView {
  const next = addMessages(room, older, me, true);
  return { ...next, hasMore };
}

/** How far back a linked message may be for the view to load every page down to it; farther,
 * the view shows a window around it instead (`atWindow`). */
export const WINDOW_AFTER = 1000;

/** The view as a window of the log: `page` (history ending after the target, oldest first),
 * shown alone; the messages known newer than it are kept for when the reader comes back. */
export function atWindow(room: RoomView, page: Message[], hasMore: boolean, me?: string): RoomView {
  const end = page.at(-1)?.seq;
  if (end === undefined) return room;
  const newer = room.messages.filter((m) => m.seq > end);
  const next = addMessages({ ...room, messages: newer }, page, me, true);
  return { ...next, hasMore, windowEnd: end };
}

/** Back to the newest messages: the window's older stretch is let go (the newest page loads
 * again as on opening). */
export function toLatest(room: RoomView): RoomView {
  if (room.windowEnd === undefined) return room;
  const { windowEnd, ...rest } = room;
  const newer = room.messages.filter((m) => m.seq > windowEnd);
  return { ...rest, messages: newer, hasMore: (newer[0]?.seq ?? room.contiguous + 1) > 1 };
}

/** The messages the view shows: all of them, or a window's. */
export function shownMessages(room: RoomView): Message[] {
  const end = room.windowEnd;
  return end === undefined ? room.messages : room.messages.filter((m) => m.seq <= end);
}

export function oldestSeq(room: RoomView): number | undefined {
  return room.messages[0]?.seq;
}

// ---- sending ------------------------------------------------------------------------------

export function queueSend(room: RoomView, client_id: string, text: string, now = Date.now(), reply_to?: ReplyPreview, attachment?: Attachment): RoomView {
  return {
    ...room,
    outgoing: [...room.outgoing, { client_id, text, ts: now, status: 'pending', ...(reply_to ? { reply_to } : {}), ...(attachment ? { attachment } : {}) }],
  };
}

/** Error codes after which the same send may succeed later (docs/protocol.md): no answer in
 * time (`timeout`, also a connection closed before the ack), `internal` (a node shutting down,
 * a store unavailable), `rate_limited`. */
export const RETRYABLE_CODES = new Set(['timeout', 'internal', 'rate_limited']);

export function sendFailed(room: RoomView, client_id: string, error: string, retryable = false): RoomView {
  return {
    ...room,
    outgoing: room.outgoing.map((o) => (o.client_id === client_id ? { ...o, status: 'failed', error, retryable } : o)),
  };
}

/** Our failed sends worth making again once connected, oldest first. */
export function toResend(room: RoomView): Outgoing[] {
  return room.outgoing.filter((o) => o.status === 'failed' && o.retryable);
}

/** A retry keeps the same client_id: if the first attempt did reach the server, the retry
 * returns that message instead of storing a second one. */
export function retrySend(room: RoomView, client_id: string): RoomView {
  return {
    ...room,
    outgoing: room.outgoing.map((o) => (o.client_id === client_id ? { ...o, status: 'pending', error: undefined, retryable: undefined } : o)),
  };
}

/** Takes a failed send away (dismissed, or moved back to the composer to be edited). */
export function dropSend(room: RoomView, client_id: string): RoomView {
  return { ...room, outgoing: room.outgoing.filter((o) => o.client_id !== client_id) };
}

/** What is kept of a room's unacknowledged sends when the page closes. */
export function outboxOf(room: RoomView): Outgoing[] {
  return room.outgoing.map((o) => ({ ...o }));
}

/**
 * Sends kept from a page that closed, as the next page shows them: one that was still
 * waiting for its answer is failed-and-retryable, so it is made again (with its client_id:
 * stored once even if the first attempt did reach the server) once connected.
 */
export function restoreOutbox(saved: Outgoing[]): Outgoing[] {
  return saved.map((o) => (o.status === 'pending'
    ? { ...o, status: 'failed' as const, retryable: true, error: 'not answered before the page closed' }
    : o));
}

// ---- unread -------------------------------------------------------------------------------

/**
 * Messages after `lastRead` that others sent: the server's count while the marker is where
 * the server counted from, plus what others sent since; otherwise messages not loaded are
 * counted from `lastSeq`, and loaded ones of our own are not counted.
 */
export function unreadCount(room: RoomView, me: string): number {
  const after = room.lastSeq - room.lastRead;
  if (after <= 0) return 0;
  const c = room.counted;
  if (c && c.lastRead === room.lastRead) {
    const since = room.messages.filter((m) => m.seq > c.lastSeq && m.sender.id !== me && isMessage(m)).length;
    return Math.min(after, c.unread + since);
  }
  const own = room.messages.filter((m) => m.seq > room.lastRead && (m.sender.id === me || !isMessage(m))).length;
  return Math.max(0, after - own);
}

/** The room with a read marker from the server (another device's, or this user's at load):
 * the marker only moves forward; the server's unread count, when it comes with one, holds
 * while the marker is where it counted from. */
export function readUpTo(room: RoomView, seq: number, counted?: RoomView['counted']): RoomView {
  const next = seq > room.lastRead ? { ...room, lastRead: seq } : room;
  return counted && next.lastRead === counted.lastRead ? { ...next, counted } : next;
}

/** Everything is read once seen: the reader is at the newest messages (not in a window). */
export function markRead(room: RoomView): RoomView {
  if (room.windowEnd !== undefined) return room;
  return room.lastRead === room.lastSeq ? room : { ...room, lastRead: room.lastSeq };
}

// ---- mentions -----------------------------------------------------------------------------

/** The message mentions us, by name or as a member of the room; our own never does. */
export function mentionsMe(m: Message, me: string): boolean {
  if (m.sender.id === me) return false;
  return m.mention_room === true || (m.mentions ?? []).includes(me);
}

/** Counts as a mention in the room's badge and at the `mentions` level: in a DM every message
 * of the other user is addressed to us. */
export function isMention(room: Pick<RoomView, 'kind'>, m: Message, me: string): boolean {
  return m.sender.id !== me && isMessage(m) && (room.kind === 'dm' || mentionsMe(m, me));
}

/**
 * Unread messages that mention us, counted as `unreadCount` counts: the server's count while
 * the marker is where it counted, plus loaded messages since; otherwise the loaded messages
 * after the marker (after a move the server did not count from, those are the ones left).
 */
export function mentionCount(room: RoomView, me: string): number {
  const unread = unreadCount(room, me);
  if (unread === 0) return 0;
  const c = room.counted;
  if (c && c.lastRead === room.lastRead) {
    const since = room.messages.filter((m) => m.seq > c.lastSeq && isMention(room, m, me)).length;
    return Math.min(unread, (c.mentions ?? 0) + since);
  }
  return Math.min(unread, room.messages.filter((m) => m.seq > room.lastRead && isMention(room, m, me)).length);
}

// ---- notifications ------------------------------------------------------------------------

/**
 * Whether a message that just arrived deserves a system notification: someone else's, not
 * read yet, newer than `after` (what the page knew of the room when it loaded: catching up on
 * older messages notifies nothing), not `seen` (the room open in a visible tab), and allowed
 * by the room's level.
 */
export function shouldNotify(room: RoomView, m: Message, me: string, { seen, after = 0 }: { seen: boolean; after?: number }): boolean {
  if (m.sender.id === me || !isMessage(m) || seen || m.seq <= room.lastRead || m.seq <= after) return false;
  switch (room.level ?? 'all') {
    case 'none': return false;
    case 'mentions': return isMention(room, m, me);
    default: return true;
  }
}

/** A notification's longest body, in characters: the system shows a line or two anyway. */
const NOTIFICATION_BODY_CHARS = 200;

/** Title and body of a message's notification; without previews the text is not quoted. */
export function notificationOf(m: Message, kind: RoomView['kind'], previews: boolean): { title: string; body: string } {
  const title = kind === 'dm' ? m.sender.username : `${m.sender.username} in #${m.room}`;
  if (!previews) return { title, body: 'New message' };
  const chars = [...m.text];
  const body = chars.length > NOTIFICATION_BODY_CHARS ? `${chars.slice(0, NOTIFICATION_BODY_CHARS - 1).join('')}…` : m.text;
  return { title, body };
}

/** What the favicon's badge says: nothing at zero, "99+" past 99. */
export function badgeText(n: number): string {
  return n <= 0 ? '' : n > 99 ? '99+' : String(n);
}

// ---- read receipts ------------------------------------------------------------------------

/** The receipts of a `join`: the server's list as it stands now (a member who turned receipts
 * off since is no longer in it). */
export function setReceipts(room: RoomView, list: Receipt[]): RoomView {
  const receipts: Record<string, Receipt> = {};
  for (const r of list) receipts[r.user.id] = { user: r.user, seq: r.seq };
  return { ...room, receipts };
}

/** A `receipt` event: a member's marker only moves forward. */
export function addReceipt(room: RoomView, r: Receipt): RoomView {
  const had = room.receipts?.[r.user.id];
  if (had && had.seq >= r.seq) return room;
  return { ...room, receipts: { ...room.receipts, [r.user.id]: { user: r.user, seq: r.seq } } };
}

/**
 * Where receipts show: under the last loaded message each member has read (the highest seq at
 * or below their marker), by that message's seq, members by name. We are left out, and so is
 * a marker below every loaded message (nothing shown of what it points at).
 */
export function placeReceipts(room: RoomView, me: string): Map<number, UserRef[]> {
  const at = new Map<number, UserRef[]>();
  const seqs = room.messages.map((m) => m.seq);
  for (const r of Object.values(room.receipts ?? {})) {
    if (r.user.id === me) continue;
    // The last message at or below the marker (messages are ascending by seq).
    let lo = 0;
    let hi = seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seqs[mid] <= r.seq) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) continue;
    const seq = seqs[lo - 1];
    at.set(seq, [...(at.get(seq) ?? []), r.user]);
  }
  for (const users of at.values()) users.sort((a, b) => a.username.localeCompare(b.username));
  return at;
}

// ---- display ------------------------------------------------------------------------------

export interface MessageGroup {
  sender: UserRef;
  day: string;
  messages: Message[];
}

/** Consecutive messages of one sender on one day, less than 5 minutes apart, form a group. */
export function groupMessages(messages: Message[], dayOf: (ts: number) => string = localDay): MessageGroup[] {
  const groups: MessageGroup[] = [];
  for (const m of messages) {
    if (!isMessage(m)) continue;
    const day = dayOf(m.ts);
    const last = groups.at(-1);
    const prev = last?.messages.at(-1);
    if (last && prev && last.sender.id === m.sender.id && last.day === day && m.ts - prev.ts < 5 * 60_000) {
      last.messages.push(m);
    } else {
      groups.push({ sender: m.sender, day, messages: [m] });
    }
  }
  return groups;
}

export function localDay(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

export type TextPart = { text: string } | { href: string; text: string } | { mention: string; text: string };

/** Splits text into plain parts and http(s) links. Rendered as text nodes and <a> elements —
 * never as HTML. */
export function linkify(text: string): TextPart[] {
  const parts: TextPart[] = [];
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let at = 0;
  for (const match of text.matchAll(re)) {
    let url = match[0];
    // Trailing punctuation usually ends the sentence, not the URL.
    const trimmed = url.replace(/[.,;:!?)\]]+$/, '');
    url = trimmed;
    const start = match.index ?? 0;
    if (start > at) parts.push({ text: text.slice(at, start) });
    parts.push({ href: url, text: url });
    at = start + url.length;
  }
  if (at < text.length) parts.push({ text: text.slice(at) });
  return parts;
}

/**
 * Splits text into plain parts, http(s) links and `@name` mentions, found as the server finds
 * them (docs/protocol.md): an `@` that does not follow a letter, digit or `_`, then the longest
 * run of username characters; a trailing `.` or `-` ends the sentence, not the name. `mention`
 * is the name in lower case (`room` for `@room`). Rendered as text nodes — never as HTML.
 */
export function richText(text: string): TextPart[] {
  const parts: TextPart[] = [];
  for (const p of linkify(text)) {
    if ('href' in p) {
      parts.push(p);
      continue;
    }
    let at = 0;
    for (const match of p.text.matchAll(/@([A-Za-z0-9_.-]+)/g)) {
      const start = match.index ?? 0;
      const before = start > 0 ? p.text.charCodeAt(start - 1) : -1;
      if (before >= 0 && (before >= 0x80 || /[A-Za-z0-9_]/.test(p.text[start - 1]))) continue;
      const name = match[1].replace(/[.-]+$/, '');
      if (name.toLowerCase() !== 'room' && (name.length < 3 || name.length > 32)) continue;
      if (start > at) parts.push({ text: p.text.slice(at, start) });
      parts.push({ mention: name.toLowerCase(), text: `@${name}` });
      at = start + 1 + name.length;
    }
    if (at < p.text.length) parts.push({ text: p.text.slice(at) });
  }
  return parts;
}

/** The other user of a DM room, whose name is `dm-<id>-<id>` (lower-case ids). */
export function dmPeer(roomName: string, me: UserRef, known: UserRef[]): UserRef | undefined {
  const ids = roomName.replace(/^dm-/, '').split('-');
  const other = ids.find((id) => id !== me.id.toLowerCase());
  return known.find((u) => u.id.toLowerCase() === other);
}

/** The server's limit on a message's text, in UTF-8 bytes, until it says otherwise. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4096;

const utf8 = new TextEncoder();

/** A text's size as the server counts it: UTF-8 bytes, not characters. */
export function utf8Bytes(text: string): number {
  return utf8.encode(text).length;
}

/**
 * What the composer says about a text's length: nothing far from the limit; a counter from
 * 80 % of it; past it, that the text cannot be sent as it is (nothing is ever cut).
 */
export function lengthNotice(bytes: number, max: number): { show: boolean; over: boolean; text: string } {
  const over = bytes > max;
  const text = over
    ? `${bytes.toLocaleString('en')} / ${max.toLocaleString('en')} bytes — too long to send; shorten it by ${(bytes - max).toLocaleString('en')}`
    : `${bytes.toLocaleString('en')} / ${max.toLocaleString('en')} bytes`;
  return { show: bytes >= max * 0.8, over, text };
}

/**
 * Where each of our unacknowledged sends shows among the room's groups: a failed one stays
 * where it was written (before the first group that came after it), so newer messages do not
 * pile up above it; a pending one is at the end, where it will land. `before[i]`: the sends
 * shown before group `i`; `end`: those after the last group.
 */
export function placeOutgoing(groups: MessageGroup[], outgoing: Outgoing[]): { before: Outgoing[][]; end: Outgoing[] } {
  const before: Outgoing[][] = groups.map(() => []);
  const end: Outgoing[] = [];
  for (const o of outgoing) {
    const i = o.status === 'failed' ? groups.findIndex((g) => g.messages[0].ts > o.ts) : -1;
    if (i >= 0) before[i].push(o);
    else end.push(o);
  }
  return { before, end };
}

/** Avatar colours: white initials on each meet WCAG AA contrast. */
export const AVATAR_COLOURS = 8;

/** A user's avatar: up to two initials from their name and a colour that is always theirs. */
export function avatarOf(user: UserRef): { initials: string; colour: number } {
  const parts = user.username.split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  const initials = (parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] ?? '?').slice(0, 2)).toUpperCase();
  let h = 0;
  for (const c of user.id) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return { initials, colour: h % AVATAR_COLOURS };
}

/** A fragment cut into runs, `mark` on the whole words of `words` (lower case: the search answer's). */
export function highlight(fragment: string, words: string[]): { text: string; mark: boolean }[] {
  const wanted = new Set(words);
  const out: { text: string; mark: boolean }[] = [];
  let at = 0;
  for (const m of fragment.matchAll(/[\p{L}\p{N}]+/gu)) {
    if (!wanted.has(m[0].toLowerCase())) continue;
    const start = m.index ?? 0;
    if (start > at) out.push({ text: fragment.slice(at, start), mark: false });
    out.push({ text: m[0], mark: true });
    at = start + m[0].length;
  }
  if (at < fragment.length) out.push({ text: fragment.slice(at), mark: false });
  return out;
}
