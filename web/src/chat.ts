// The live client: one Socket.IO connection (official socket.io-client), the rooms it follows,
// and the recovery rule. State lives in one immutable snapshot; the UI subscribes to changes.
//
// Recovery: on every (re)connect, each followed room is joined again and synced from its
// contiguous seq; a live message whose seq jumps ahead triggers the same sync. Messages are
// merged by id, so whatever arrives twice is shown once. Nothing here assumes one server
// process: a reconnect may land on another node of a cluster.
//
// System notifications: a message from someone else that arrives while its room is not in
// view (another room open, or the tab hidden) shows one when the room's level allows it and
// the user granted the permission (asked for only from Settings, on a click).
import { io, type Socket } from 'socket.io-client';
import { api, ApiError, fileBlob, upload, type JoinAck, type RoomInfo, type Session, type Settings, type Upload } from './api';
import {
  addHistory, addMessages, addReceipt, dropSend, emptyRoom, atWindow, hasGap, markRead, notificationOf, oldestSeq, outboxOf, queueSend, readUpTo, restoreOutbox, retrySend, toLatest, WINDOW_AFTER,
  RETRYABLE_CODES, sendFailed, setReceipts, shouldNotify, syncedThrough, toResend, type Attachment, type Message, type NotifyLevel, type Outgoing, type Receipt, type ReplyPreview, type RoomView, type UserRef,
} from './state';

export type Connection = 'connecting' | 'connected' | 'reconnecting';

export interface Snapshot {
  me: UserRef;
  connection: Connection;
  rooms: Record<string, RoomView>;
  /** Public rooms we are not a member of (browse and join). */
  discover: RoomInfo[];
  online: Record<string, UserRef[]>;
  typing: Record<string, Record<string, { user: UserRef; until: number }>>;
  /** Users seen anywhere (message senders, presence), for naming DM peers. */
  people: Record<string, UserRef>;
  active?: string;
  /** What was unread in the active room when it was opened (the "New messages" divider). */
  opened?: { room: string; after: number; upTo: number };
  /** The room list has been fetched once (an address naming a room can be opened). */
  roomsLoaded?: boolean;
  /** A message to bring into view in the active room (a link to it was followed). */
  focus?: { room: string; seq: number };
  /** The user's settings, once the server has told them. */
  settings?: Settings;
}

type Ack<T> = ({ ok: true } & T) | { ok: false; error: { code: string; message: string } };

const TYPING_SHOWN_MS = 4000;
const ACK_TIMEOUT_MS = 10000;
/** Image previews kept in memory at once. */
const PREVIEWS_KEPT = 200;

/** A send that failed with a retryable error is made again this many times in all while the
 * connection stays up, the n-th time n × RESEND_AFTER_MS later. */
const AUTO_RESENDS = 3;
const RESEND_AFTER_MS = 2000;

/** Read marks are sent at most this often per room: a fast reader sends one, not one per
 * message. */
const READ_EVERY_MS = 300;

export class ChatClient {
  private socket: Socket;
  private listeners = new Set<() => void>();
  private syncing = new Map<string, Promise<void>>();
  /** Each room's last send, which the next one waits for. */
  /** Whether the open room's view shows its newest messages. */
  private atLatest = true;
  private sending = new Map<string, Promise<void>>();
  /** Previews fetched for showing, by room and id (object URLs), least recently used first. */
  private previewUrls = new Map<string, { url: Promise<string>; shown: number }>();
  /** Each room's highest read mark the server has, was sent or will be sent: a local mark
   * beyond it is sent. */
  private readMarks = new Map<string, number>();
  /** Read marks waiting to be sent (the newest per room). */
  private unsentReads = new Map<string, number>();
  private readTimer: ReturnType<typeof setTimeout> | undefined;
  /** Each room's last seq when this page first listed it: what came before is not news. */
  private notifyAfter = new Map<string, number>();
  private listed = false;
  snapshot: Snapshot;

  constructor(private session: Session, private onUnauthorized: () => void) {
    this.snapshot = {
      me: session.user, connection: 'connecting', rooms: {}, discover: [], online: {}, typing: {}, people: {},
    };
    // Read marks made here that the server has not confirmed (offline, or the page closed
    // before the flush) come back with the page, and are sent on the first connect.
    for (const [room, seq] of Object.entries(this.savedReads())) {
      this.unsentReads.set(room, seq);
      this.noteMark(room, seq);
    }
    this.socket = io({ auth: { token: session.token }, reconnectionDelayMax: 5000 });
    this.socket.on('connect', () => this.onConnect());
    this.socket.on('disconnect', (reason) => {
      this.update({ connection: 'reconnecting' });
      // The server ended the connection itself (its session was signed out): socket.io does
      // not reconnect by itself then. Connecting again tells a signed-out session (refused,
      // `unauthorized`) from anything else.
      if (reason === 'io server disconnect') this.socket.connect();
    });
    this.socket.on('connect_error', (err) => {
      if (err.message === 'unauthorized') this.onUnauthorized();
      else this.update({ connection: 'reconnecting' });
    });
    this.socket.on('message', (m: Message) => this.onMessage(m));
    this.socket.on('typing', (t: { room: string; user: UserRef }) => this.onTyping(t.room, t.user));
    this.socket.on('presence', (p: { room: string; user: UserRef; online: boolean }) => this.onPresence(p));
    // We are in a new room (someone added us, or we created or joined it in another tab or
    // through the API): it appears in the sidebar at once.
    this.socket.on('room_added', () => void this.refreshRooms().catch((e) => this.apiFailed(e)));
    // Someone created a public room: it is offered under Browse at once (from the event
    // itself: no request per client for what everyone is told).
    this.socket.on('room_created', (r: { room: RoomInfo }) => this.offerRoom(r.room));
    // We left the room on another device, or its owner removed us.
    this.socket.on('room_removed', (r: { room: string }) => this.dropRoom(r.room));
    // We read a room on another device (or tab): it is read here too.
    this.socket.on('read', (r: { room: string; seq: number }) => this.serverMarker(r.room, r.seq));
    // Another member read further.
    this.socket.on('receipt', (r: Receipt & { room: string }) => {
      this.remember([r.user]);
      this.setRoom(r.room, (x) => addReceipt(x, r));
    });
    // We changed a room's notification level, or our settings, here or on another device.
    this.socket.on('notifications', (n: { room: string; level: NotifyLevel }) => this.setRoom(n.room, (x) => ({ ...x, level: n.level })));
    this.socket.on('settings', (s: Settings) => this.applySettings(s));
    void this.refreshRooms().catch((e) => this.apiFailed(e));
  }

  /** A REST call failed: an expired or revoked token signs out; anything else is retried on
   * the next (re)connect. */
  private apiFailed(e: unknown) {
    if (e instanceof ApiError && e.status === 401) this.onUnauthorized();
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close() {
    this.socket.close();
    this.listeners.clear();
  }

  private update(patch: Partial<Snapshot>) {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const fn of this.listeners) fn();
  }

  private setRoom(name: string, f: (r: RoomView) => RoomView) {
    const room = this.snapshot.rooms[name];
    if (!room) return;
    let next = f(room);
    // The open room is read as messages arrive while its reader sees the newest ones (the view
    // follows them); scrolled up, what arrives stays unread until they come back down.
    if (name === this.snapshot.active && this.atLatest && document.visibilityState !== 'hidden') next = markRead(next);
    if (next !== room) {
      if (next.lastRead > (this.readMarks.get(name) ?? 0)) this.queueRead(name, next.lastRead);
      if (next.outgoing !== room.outgoing) this.saveOutbox(name, next);
      this.update({ rooms: { ...this.snapshot.rooms, [name]: next } });
    }
  }

  private remember(users: UserRef[]) {
    const fresh = users.filter((u) => !this.snapshot.people[u.id]);
    if (fresh.length) {
      const people = { ...this.snapshot.people };
      for (const u of fresh) people[u.id] = u;
      this.update({ people });
    }
  }

  private emit<T>(event: string, arg: unknown): Promise<Ack<T>> {
    // A connection that closes drops the answers still to come: say so at once rather than
    // after the timeout (a send is then made again after the reconnect, with its client_id).
    let onLost = () => {};
    const lost = new Promise<Ack<T>>((resolve) => {
      onLost = () => resolve({ ok: false, error: { code: 'timeout', message: 'The connection was lost before the server answered.' } });
      this.socket.once('disconnect', onLost);
    });
    const answered = this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, arg).catch(() => ({
      ok: false as const, error: { code: 'timeout', message: 'The server did not answer in time.' },
    }));
    return Promise.race([answered, lost]).finally(() => this.socket.off('disconnect', onLost));
  }

  // ---- rooms ----------------------------------------------------------------------------

  async refreshRooms() {
    const list = await api.rooms(this.session.token);
    const rooms = { ...this.snapshot.rooms };
    const fresh: string[] = [];
    for (const r of list.filter((x) => x.member)) {
      const lastRead = r.last_read ?? 0;
      this.noteMark(r.name, lastRead);
      const counted = r.unread === undefined ? undefined : { lastRead, lastSeq: r.last_seq, unread: r.unread, mentions: r.mentions };
      if (!this.listed && !this.notifyAfter.has(r.name)) this.notifyAfter.set(r.name, r.last_seq);
      if (!rooms[r.name]) {
        const listed = readUpTo({ ...emptyRoom(r.name, r.kind, r.last_seq, lastRead), outgoing: this.savedOutbox(r.name), level: r.notifications }, lastRead, counted);
        // A mark made here before a reload, not yet on the server, holds meanwhile.
        rooms[r.name] = readUpTo(listed, this.readMarks.get(r.name) ?? 0);
        fresh.push(r.name);
      } else {
        const level = r.notifications ?? rooms[r.name].level;
        rooms[r.name] = readUpTo({ ...rooms[r.name], lastSeq: Math.max(rooms[r.name].lastSeq, r.last_seq), level }, lastRead, counted);
      }
    }
    this.listed = true;
    this.update({ rooms, discover: list.filter((x) => !x.member && x.kind === 'public'), roomsLoaded: true });
    // A DM is named after its other user, who may never have been seen otherwise.
    this.remember(list.flatMap((r) => (r.member && r.peer ? [r.peer] : [])));
    if (this.socket.connected) await Promise.all(fresh.map((n) => this.follow(n)));
  }

  /** The server's read marker for a room (and its unread count there, from a listing or a
   * join): the marker moves forward here too. */
  private serverMarker(name: string, seq: number, counted?: RoomView['counted']) {
    if (typeof seq !== 'number') return;
    this.noteMark(name, seq);
    this.setRoom(name, (x) => readUpTo(x, seq, counted));
  }

  private noteMark(room: string, seq: number) {
    this.readMarks.set(room, Math.max(this.readMarks.get(room) ?? 0, seq));
  }

  /** Sends the newest read mark of each room, coalesced; a mark that fails and may pass
   * later (offline, a node shutting down) is sent again on the next connect. */
  private queueRead(room: string, seq: number) {
    this.noteMark(room, seq);
    this.unsentReads.set(room, Math.max(this.unsentReads.get(room) ?? 0, seq));
    this.saveRead(room, seq);
    if (!this.readTimer && this.socket.connected) this.readTimer = setTimeout(() => this.flushReads(), READ_EVERY_MS);
  }

  private flushReads() {
    this.readTimer = undefined;
    const marks = [...this.unsentReads];
    this.unsentReads.clear();
    for (const [room, seq] of marks) {
      void this.emit<{ room: string; last_read: number }>('read', { room, seq }).then((r) => {
        if (r.ok) {
          this.serverMarker(room, r.last_read);
          this.forgetRead(room, r.last_read);
        } else if (RETRYABLE_CODES.has(r.error.code)) {
          // Kept for the next flush (the next mark, or the next connect).
          this.unsentReads.set(room, Math.max(this.unsentReads.get(room) ?? 0, seq));
        } else {
          this.forgetRead(room, seq);
        }
      });
    }
  }

  // Read marks the server has not confirmed yet, kept in this browser (one entry per user).
  private readsKey() {
    return `scalify.reads:${this.snapshot.me.id}`;
  }

  private savedReads(): Record<string, number> {
    try {
      const saved: unknown = JSON.parse(localStorage.getItem(this.readsKey()) ?? '{}');
      if (!saved || typeof saved !== 'object') return {};
      return Object.fromEntries(Object.entries(saved).filter((e): e is [string, number] => Number.isInteger(e[1]) && e[1] > 0));
    } catch {
      return {};
    }
  }

  private writeReads(reads: Record<string, number>) {
    try {
      if (Object.keys(reads).length) localStorage.setItem(this.readsKey(), JSON.stringify(reads));
      else localStorage.removeItem(this.readsKey());
    } catch {
      // Storage full or refused: the mark is still sent while this page lives.
    }
  }

  private saveRead(room: string, seq: number) {
    const reads = this.savedReads();
    if ((reads[room] ?? 0) >= seq) return;
    this.writeReads({ ...reads, [room]: seq });
  }

  /** The server has the room's marker at `seq` (or refused it for good): a saved mark at or
   * below it is done with. */
  private forgetRead(room: string, seq: number) {
    const reads = this.savedReads();
    if (reads[room] === undefined || reads[room] > seq) return;
    delete reads[room];
    this.writeReads(reads);
  }

  private offerRoom(room: RoomInfo) {
    if (room.kind !== 'public' || this.snapshot.rooms[room.name] || this.snapshot.discover.some((r) => r.name === room.name)) return;
    const discover = [...this.snapshot.discover, { ...room, member: false }].sort((a, b) => a.name.localeCompare(b.name));
    this.update({ discover });
  }

  /** Joins a room on this connection (live events) and recovers anything missed. */
  private async follow(name: string) {
    const r = await this.emit<JoinAck>('join', { room: name });
    if (!r.ok) return;
    this.remember(r.online);
    this.serverMarker(name, r.last_read, { lastRead: r.last_read, lastSeq: r.room.last_seq, unread: r.unread, mentions: r.mentions });
    // The receipts as they stand (none when we turned them off), and our level here.
    this.remember((r.receipts ?? []).map((x) => x.user));
    this.setRoom(name, (x) => setReceipts(r.notifications ? { ...x, level: r.notifications } : x, r.receipts ?? []));
    this.update({ online: { ...this.snapshot.online, [name]: r.online } });
    const room = this.snapshot.rooms[name];
    if (!room) return;
    if (room.messages.length === 0 && room.contiguous === room.lastSeq) {
      // Nothing loaded yet: start the live stream at the server's last_seq.
      this.setRoom(name, (x) => ({ ...x, contiguous: Math.max(x.contiguous, r.room.last_seq), lastSeq: Math.max(x.lastSeq, r.room.last_seq), hasMore: r.room.last_seq > 0 }));
      if (name === this.snapshot.active) await this.loadOlder(name);
    } else {
      this.setRoom(name, (x) => ({ ...x, lastSeq: Math.max(x.lastSeq, r.room.last_seq) }));
      await this.sync(name);
    }
  }

  private async onConnect() {
    this.update({ connection: 'connected' });
    // Settings changed on another device while this one was away come with the connection.
    void this.loadSettings();
    await this.refreshRooms().catch((e) => this.apiFailed(e));
    await Promise.all(Object.keys(this.snapshot.rooms).map((n) => this.follow(n)));
    if (this.unsentReads.size && !this.readTimer) this.flushReads();
    // A send left unanswered by a lost connection (or refused by a node shutting down) is made
    // again with its client_id: stored once whether or not the first attempt was.
    await Promise.all(Object.values(this.snapshot.rooms).map(async (r) => {
      for (const o of toResend(r)) {
        if (!this.socket.connected) return;
        await this.send(r.name, o.text, o.client_id);
      }
    }));
  }

  /** Everything after the room's contiguous seq (paged while the server says truncated). */
  sync(name: string): Promise<void> {
    const running = this.syncing.get(name);
    if (running) return running.then(() => (this.snapshot.rooms[name] && hasGap(this.snapshot.rooms[name]) ? this.sync(name) : undefined));
    const work = (async () => {
      for (let i = 0; i < 20; i++) {
        const room = this.snapshot.rooms[name];
        if (!room) return;
        const r = await this.emit<{ rooms: Record<string, { messages: Message[]; truncated: boolean }> }>('sync', { rooms: { [name]: room.contiguous } });
        if (!r.ok) return;
        const got = r.rooms[name];
        this.remember(got.messages.map((m) => m.sender));
        const before = this.snapshot.rooms[name];
        this.setRoom(name, (x) => addMessages(x, got.messages, this.snapshot.me.id, true));
        this.notify(name, before, got.messages);
        if (!got.truncated) {
          const newest = got.messages.at(-1)?.seq;
          if (newest !== undefined) this.setRoom(name, (x) => syncedThrough(x, newest));
          return;
        }
      }
    })().finally(() => this.syncing.delete(name));
    this.syncing.set(name, work);
    return work;
  }

  async loadOlder(name: string) {
    const room = this.snapshot.rooms[name];
    if (!room || !room.hasMore) return;
    const before = oldestSeq(room) ?? room.contiguous + 1;
    const r = await this.emit<{ messages: Message[]; has_more: boolean }>('history', { room: name, before_seq: before });
    if (!r.ok) return;
    this.remember(r.messages.map((m) => m.sender));
    this.setRoom(name, (x) => addHistory(x, r.messages, r.has_more, this.snapshot.me.id));
  }

  isAtLatest() {
    return this.atLatest;
  }

  /** The reader of the open room scrolled to its newest messages (`atLatest`) or away from
   * them: only what they see is marked read. */
  viewing(name: string, atLatest: boolean) {
    this.atLatest = atLatest;
    if (atLatest && name === this.snapshot.active && document.visibilityState !== 'hidden') this.setRoom(name, markRead);
  }

  open(name: string | undefined) {
    // A room opens at its newest messages.
    this.atLatest = true;
    const r = name ? this.snapshot.rooms[name] : undefined;
    this.update({ active: name, opened: r && name ? { room: name, after: r.lastRead, upTo: r.lastSeq } : undefined });
    if (!name) return;
    this.setRoom(name, markRead);
    const room = this.snapshot.rooms[name];
    if (room && room.messages.length === 0 && room.hasMore) void this.loadOlder(name);
  }

  /** Opens the room at `seq`: older pages load until that message is there, or, when it is
   * more than WINDOW_AFTER messages back, the view shows a window of the log around it. */
  async openAt(name: string, seq: number) {
    this.open(name);
    const room = this.snapshot.rooms[name];
    const from = room ? (oldestSeq(room) ?? room.contiguous + 1) : 0;
    if (room && from - seq > WINDOW_AFTER) {
      const r = await this.emit<{ messages: Message[]; has_more: boolean }>('history', { room: name, before_seq: seq + 25, limit: 50 });
      if (r.ok) {
        this.remember(r.messages.map((m) => m.sender));
        this.setRoom(name, (x) => atWindow(x, r.messages, r.has_more, this.snapshot.me.id));
      }
    } else {
      for (let i = 0; i < 20; i++) {
        const r = this.snapshot.rooms[name];
        if (!r || !r.hasMore || (oldestSeq(r) ?? Infinity) <= seq) break;
        await this.loadOlder(name);
      }
    }
    this.update({ focus: { room: name, seq } });
  }

  /** Leaves a window of the log for the newest messages. */
  async toLatest(name: string) {
    this.setRoom(name, toLatest);
    this.atLatest = true;
    const room = this.snapshot.rooms[name];
    if (room && room.messages.length < 50 && room.hasMore) await this.loadOlder(name);
    this.setRoom(name, markRead);
  }

  async join(name: string) {
    const r = await this.emit<JoinAck>('join', { room: name });
    if (!r.ok) throw new Error(r.error.message);
    if (!this.snapshot.rooms[name]) {
      // A room just joined starts read (the server starts its marker there): its past is
      // history, not unread news.
      this.update({ rooms: { ...this.snapshot.rooms, [name]: emptyRoom(name, r.room.kind, r.room.last_seq, r.room.last_seq) } });
    }
    await this.refreshRooms();
    await this.follow(name);
    this.open(name);
  }

  async createRoom(name: string, kind: 'public' | 'private') {
    await api.createRoom(this.session.token, name, kind);
    await this.join(name);
  }

  async openDm(username: string) {
    const room = await api.openDm(this.session.token, username);
    await this.join(room.name);
    return room.name;
  }

  addMember(room: string, username: string) {
    return api.addMember(this.session.token, room, username);
  }

  /** The room's members and its owner's id (null for a room without one). */
  members(room: string) {
    return api.members(this.session.token, room).then((m) => { this.remember(m.members); return m; });
  }

  /** Leaves the room for good (not a DM); every tab and device drops it (`room_removed`). */
  async leave(room: string) {
    await api.leaveRoom(this.session.token, room);
    this.dropRoom(room);
  }

  removeMember(room: string, username: string) {
    return api.removeMember(this.session.token, room, username);
  }

  block(username: string) {
    return api.block(this.session.token, username);
  }

  /** We are no longer in the room: it leaves the sidebar (a public one goes back to Browse). */
  private dropRoom(name: string) {
    if (!this.snapshot.rooms[name]) return;
    const rooms = { ...this.snapshot.rooms };
    delete rooms[name];
    this.update({ rooms });
    if (this.snapshot.active === name) this.open(undefined);
    void this.refreshRooms().catch((e) => this.apiFailed(e));
  }

  // ---- messages -------------------------------------------------------------------------

  /** Shown at once; sent after the room's previous send has its answer. Two sends in flight
   * together may be stored in either order (docs/protocol.md), and what a user typed must show
   * in the order they typed it. */
  send(room: string, text: string, clientId: string = crypto.randomUUID(), attempt = 1, replyTo?: ReplyPreview, attachment?: Attachment): Promise<void> {
    this.setRoom(room, (r) => (r.outgoing.some((o) => o.client_id === clientId) ? retrySend(r, clientId) : queueSend(r, clientId, text, Date.now(), replyTo, attachment)));
    // A send made again (a retry, a resend after a reconnect) carries what it first did.
    const queued = this.snapshot.rooms[room]?.outgoing.find((o) => o.client_id === clientId);
    const reply = replyTo ?? queued?.reply_to;
    const file = attachment ?? queued?.attachment;
    const mine = (this.sending.get(room) ?? Promise.resolve()).then(() => this.transmit(room, text, clientId, attempt, reply, file));
    const settled = mine.catch(() => {});
    this.sending.set(room, settled);
    void settled.then(() => { if (this.sending.get(room) === settled) this.sending.delete(room); });
    return mine;
  }

  private async transmit(room: string, text: string, clientId: string, attempt: number, replyTo?: ReplyPreview, attachment?: Attachment) {
    const r = await this.emit<{ message: Message }>('send', { room, text, client_id: clientId, reply_to: replyTo?.id, attachment: attachment?.id });
    if (r.ok) {
      this.setRoom(room, (x) => addMessages(x, [r.message], this.snapshot.me.id));
      return;
    }
    const retryable = RETRYABLE_CODES.has(r.error.code);
    this.setRoom(room, (x) => sendFailed(x, clientId, r.error.message, retryable));
    // Made again a few times while connected (after a reconnect, always): the same client_id
    // never stores it twice.
    if (retryable && attempt < AUTO_RESENDS) {
      setTimeout(() => {
        const o = this.snapshot.rooms[room]?.outgoing.find((x) => x.client_id === clientId);
        if (o?.status === 'failed' && this.socket.connected) void this.send(room, text, clientId, attempt + 1, o.reply_to);
      }, RESEND_AFTER_MS * attempt);
    }
  }

  /**
   * Edits, deletes, reacts to or takes a reaction off a message: a log entry of its own,
   * applied here once answered (the live copy that follows is merged away by id). Resolves to
   * an error message for the user, or undefined.
   */
  async change(room: string, event: 'edit' | 'delete' | 'react' | 'unreact', arg: { id: string; text?: string; emoji?: string }): Promise<string | undefined> {
    const clientId = crypto.randomUUID();
    for (let attempt = 1; ; attempt++) {
      const r = await this.emit<{ message: Message }>(event, { room, client_id: clientId, ...arg });
      if (r.ok) {
        this.setRoom(room, (x) => addMessages(x, [r.message], this.snapshot.me.id));
        return undefined;
      }
      // The same client_id again: applied once, however many attempts reached the server.
      if (!RETRYABLE_CODES.has(r.error.code) || attempt >= AUTO_RESENDS) return r.error.message;
      await new Promise((done) => setTimeout(done, RESEND_AFTER_MS * attempt));
    }
  }

  /** Takes a failed send away; it is returned (to edit it: its text and its file). */
  dismiss(room: string, clientId: string): Outgoing | undefined {
    const o = this.snapshot.rooms[room]?.outgoing.find((x) => x.client_id === clientId);
    this.setRoom(room, (r) => dropSend(r, clientId));
    return o;
  }

  // Unacknowledged sends are kept in this browser until answered: a page closed or reloaded
  // while offline loses none of them, and the next page makes them again.
  private outboxKey(room: string) {
    return `scalify.outbox:${this.snapshot.me.id}:${room}`;
  }

  private saveOutbox(room: string, view: RoomView) {
    const kept = outboxOf(view);
    if (kept.length) localStorage.setItem(this.outboxKey(room), JSON.stringify(kept));
    else localStorage.removeItem(this.outboxKey(room));
  }

  private savedOutbox(room: string) {
    try {
      return restoreOutbox(JSON.parse(localStorage.getItem(this.outboxKey(room)) ?? '[]'));
    } catch {
      return [];
    }
  }

  retry(room: string, clientId: string) {
    const o = this.snapshot.rooms[room]?.outgoing.find((x) => x.client_id === clientId);
    if (o) void this.send(room, o.text, clientId);
  }

  /** Uploads `file` to `room`, to attach to a message (docs/protocol.md, "Attachments"). */
  upload(room: string, file: File, onProgress: (sent: number) => void): Upload {
    return upload(this.session.token, room, file, onProgress);
  }

  /** A local address for an image's preview, fetched once while shown, and kept for a
   * while after (the PREVIEWS_KEPT most recently shown); `release` when no longer shown. */
  previewUrl(room: string, id: string): { url: Promise<string>; release: () => void } {
    const key = `${room}/${id}`;
    let entry = this.previewUrls.get(key);
    if (entry) {
      // Most recently used last.
      this.previewUrls.delete(key);
    } else {
      const url = fileBlob(this.session.token, room, id, true).then((b) => URL.createObjectURL(b));
      entry = { url, shown: 0 };
      // A failure is not kept: the next showing tries again.
      url.catch(() => { if (this.previewUrls.get(key) === entry) this.previewUrls.delete(key); });
    }
    this.previewUrls.set(key, entry);
    entry.shown++;
    const held = entry;
    let released = false;
    return {
      url: entry.url,
      release: () => {
        if (released) return;
        released = true;
        held.shown--;
        this.trimPreviews();
      },
    };
  }

  /** Lets go of the least recently shown previews beyond PREVIEWS_KEPT that nothing shows. */
  private trimPreviews() {
    let over = this.previewUrls.size - PREVIEWS_KEPT;
    for (const [key, entry] of this.previewUrls) {
      if (over <= 0) break;
      if (entry.shown > 0) continue;
      this.previewUrls.delete(key);
      void entry.url.then((u) => URL.revokeObjectURL(u), () => {});
      over--;
    }
  }

  /** A room's file as a local address, for as long as `use` needs it (a minute). */
  async withFile(room: string, id: string, use: (url: string) => void) {
    const url = URL.createObjectURL(await fileBlob(this.session.token, room, id, false));
    use(url);
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  typing(room: string) {
    this.socket.emit('typing', { room });
  }

  private onMessage(m: Message) {
    if (!this.snapshot.rooms[m.room]) {
      void this.refreshRooms().catch((e) => this.apiFailed(e));
      return;
    }
    this.remember([m.sender]);
    const before = this.snapshot.rooms[m.room];
    this.setRoom(m.room, (r) => addMessages(r, [m], this.snapshot.me.id));
    this.notify(m.room, before, [m]);
    this.clearTyping(m.room, m.sender.id);
    const room = this.snapshot.rooms[m.room];
    if (room && hasGap(room)) void this.sync(m.room);
  }

  /** A system notification for the newest of the messages that just came into a room, if it
   * deserves one (`shouldNotify`); one per room at a time (the tag replaces the previous). */
  private notify(name: string, before: RoomView | undefined, incoming: Message[]) {
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    const room = this.snapshot.rooms[name];
    if (!room || !before) return;
    const had = new Set(before.messages.map((m) => m.id));
    const seen = name === this.snapshot.active && document.visibilityState !== 'hidden';
    const after = this.notifyAfter.get(name);
    const m = incoming.filter((x) => !had.has(x.id) && shouldNotify(room, x, this.snapshot.me.id, { seen, after })).at(-1);
    if (!m) return;
    // Until the settings are known, a notification does not quote the message.
    const { title, body } = notificationOf(m, room.kind, this.snapshot.settings?.previews ?? false);
    try {
      const n = new Notification(title, { body, tag: name });
      n.onclick = () => {
        window.focus();
        this.open(name);
        n.close();
      };
    } catch {
      // Browsers that notify only through a service worker (Chrome on Android) show nothing.
    }
  }

  // ---- settings and levels ----------------------------------------------------------------

  private async loadSettings() {
    try {
      this.applySettings(await api.settings(this.session.token));
    } catch (e) {
      this.apiFailed(e);
    }
  }

  async changeSettings(patch: Partial<Settings>) {
    this.applySettings(await api.changeSettings(this.session.token, patch));
  }

  /** Receipts turned off: others' are forgotten (the server sends no more); turned on: each
   * room is joined again, whose answer carries them as they stand. */
  private applySettings(s: Settings) {
    const was = this.snapshot.settings;
    this.update({ settings: { read_receipts: s.read_receipts, previews: s.previews } });
    if (!was || was.read_receipts === s.read_receipts) return;
    if (!s.read_receipts) {
      for (const name of Object.keys(this.snapshot.rooms)) this.setRoom(name, (x) => (x.receipts ? setReceipts(x, []) : x));
    } else if (this.socket.connected) {
      void Promise.all(Object.keys(this.snapshot.rooms).map((n) => this.follow(n)));
    }
  }

  async setLevel(room: string, level: NotifyLevel) {
    const r = await api.setLevel(this.session.token, room, level);
    this.setRoom(r.room, (x) => ({ ...x, level: r.level }));
  }

  private onTyping(room: string, user: UserRef) {
    const until = Date.now() + TYPING_SHOWN_MS;
    const typing = { ...this.snapshot.typing, [room]: { ...(this.snapshot.typing[room] ?? {}), [user.id]: { user, until } } };
    this.update({ typing });
    setTimeout(() => this.update({}), TYPING_SHOWN_MS + 50);
  }

  private clearTyping(room: string, userId: string) {
    if (!this.snapshot.typing[room]?.[userId]) return;
    const rest = { ...this.snapshot.typing[room] };
    delete rest[userId];
    this.update({ typing: { ...this.snapshot.typing, [room]: rest } });
  }

  private onPresence(p: { room: string; user: UserRef; online: boolean }) {
    this.remember([p.user]);
    const list = (this.snapshot.online[p.room] ?? []).filter((u) => u.id !== p.user.id);
    if (p.online) list.push(p.user);
    list.sort((a, b) => a.username.localeCompare(b.username));
    this.update({ online: { ...this.snapshot.online, [p.room]: list } });
    if (!p.online) this.clearTyping(p.room, p.user.id);
  }

  typingIn(room: string): UserRef[] {
    const now = Date.now();
    return Object.values(this.snapshot.typing[room] ?? {}).filter((t) => t.until > now && t.user.id !== this.snapshot.me.id).map((t) => t.user);
  }
}
