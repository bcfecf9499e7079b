// The ScalifyChat web UI: sign in / sign up, a sidebar of rooms and DMs, the room view.
// Text from users is only ever rendered as text nodes (JSX escapes it); links and mentions
// come from `richText`, whose links are only http(s) URLs.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import { Fragment } from 'preact';
import { api, ApiError, type Overview, type SearchHit, type Session, type Settings } from './api';
import { showCountOnIcon } from './favicon';
import { parseRoute, roomPath, type Route } from './route';
import { isPlain, parseMarkdown, type Block, type Inline } from './markdown';
import { emojiTable, expandShortcodes, loadEmoji, mayHaveShortcodes, searchEmoji } from './emoji';
import { ChatClient, type Snapshot } from './chat';
import { disablePush, enablePush } from './push';
import {
  avatarOf, DEFAULT_MAX_MESSAGE_BYTES, dmPeer, formatBytes, highlight, previewBox, previewOf, groupMessages, lengthNotice, mentionCount, mentionsMe, placeOutgoing, placeReceipts,
  richText, shownMessages, unreadCount, utf8Bytes, type Attachment, type Message, type NotifyLevel, type Outgoing, type ReplyPreview, type RoomView, type UserRef,
} from './state';

const SESSION_KEY = 'scalify.session';

function loadSession(): Session | null {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null');
    return s && typeof s.token === 'string' && s.user?.id ? s : null;
  } catch {
    return null;
  }
}

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const signOut = () => {
    // The session ends on the server too (every tab and socket of it closes); signing out
    // here does not wait for that, nor depend on it when offline.
    // This browser stops receiving the user's pushes before the session (which authorises
    // that) ends.
    if (session) void disablePush(session.token).finally(() => api.logout(session.token)).catch(() => {});
    localStorage.removeItem(SESSION_KEY);
    history.replaceState(null, '', '/');
    // Drafts, unsent messages and read marks are the signed-out user's own: they do not stay
    // behind in this browser.
    if (session) {
      const mine = [`scalify.draft:${session.user.id}:`, `scalify.outbox:${session.user.id}:`, `scalify.reads:${session.user.id}`];
      for (const k of Object.keys(localStorage)) if (mine.some((p) => k.startsWith(p))) localStorage.removeItem(k);
    }
    setSession(null);
  };
  if (!session) {
    return (
      <AuthScreen
        onSession={(s) => {
          localStorage.setItem(SESSION_KEY, JSON.stringify(s));
          setSession(s);
        }}
      />
    );
  }
  return <ChatScreen key={session.token} session={session} onSignOut={signOut} />;
}

// ---- sign in / sign up ------------------------------------------------------------------

function AuthScreen({ onSession }: { onSession: (s: Session) => void }) {
  const [mode, setMode] = useState<'login' | 'register'>('login');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      onSession(mode === 'login' ? await api.login(username, password) : await api.register(username, password));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : 'Something went wrong. Try again.');
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="auth">
      <form class="card" onSubmit={submit} aria-labelledby="auth-title">
        <h1 id="auth-title">ScalifyChat</h1>
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected={mode === 'login'} onClick={() => { setMode('login'); setError(''); }}>Sign in</button>
          <button type="button" role="tab" aria-selected={mode === 'register'} onClick={() => { setMode('register'); setError(''); }}>Create account</button>
        </div>
        <label>
          Username
          <input name="username" autocomplete="username" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" required autocomplete={mode === 'login' ? 'current-password' : 'new-password'}
            value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {mode === 'register' && <p class="hint">3–32 characters: a–z, 0–9, _ . -; password at least 8 characters.</p>}
        {error && <p class="error" role="alert">{error}</p>}
        <button class="primary" type="submit" disabled={busy}>{mode === 'login' ? 'Sign in' : 'Create account'}</button>
      </form>
    </main>
  );
}

// ---- the chat ---------------------------------------------------------------------------

function useSnapshot(client: ChatClient): Snapshot {
  const [snap, setSnap] = useState(client.snapshot);
  useEffect(() => {
    setSnap(client.snapshot);
    return client.subscribe(() => setSnap(client.snapshot));
  }, [client]);
  return snap;
}

function roomTitle(room: RoomView, snap: Snapshot): string {
  if (room.kind !== 'dm') return `#${room.name}`;
  const peer = dmPeer(room.name, snap.me, Object.values(snap.people));
  return peer ? `@${peer.username}` : 'Direct message';
}

function ChatScreen({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const client = useMemo(() => new ChatClient(session, onSignOut), [session.token]);
  useEffect(() => () => client.close(), [client]);
  // Where notifications were allowed before, this browser's push subscription is (re)sent
  // for the signed-in user; the browser asks nothing here.
  useEffect(() => void enablePush(session.token).catch(() => false), [session.token]);
  const snap = useSnapshot(client);
  useEffect(() => {
    // Back in the tab: what the open room's view shows now is read.
    const onVisible = () => snap.active && document.visibilityState !== 'hidden' && client.viewing(snap.active, client.isAtLatest());
    document.addEventListener('visibilitychange', onVisible);
    return () => document.removeEventListener('visibilitychange', onVisible);
  }, [client, snap.active]);
  const active = snap.active ? snap.rooms[snap.active] : undefined;

  // The address follows the open room (`/r/<room>`, `/dm/<user>`): Back and Forward move
  // between rooms, a reload reopens the room, and `#<seq>` brings a message into view.
  const routed = useRef(false);
  const go = async (route: Route) => {
    const rooms = Object.values(client.snapshot.rooms);
    const name = route.kind === 'room'
      ? route.name
      : route.kind === 'dm'
        ? rooms.find((r) => r.kind === 'dm' && dmPeer(r.name, client.snapshot.me, Object.values(client.snapshot.people))?.username === route.username)?.name
        : undefined;
    try {
      if (route.kind === 'home') return client.open(undefined);
      if (name && client.snapshot.rooms[name]) {
        if (route.seq) await client.openAt(name, route.seq);
        else client.open(name);
      } else if (route.kind === 'room' && client.snapshot.discover.some((r) => r.name === route.name)) {
        await client.join(route.name);
      } else if (route.kind === 'dm') {
        client.open(await client.openDm(route.username));
      }
    } catch {
      // A room that does not exist (or is not ours) is simply not opened.
    }
  };
  useEffect(() => {
    if (routed.current || !snap.roomsLoaded) return;
    routed.current = true;
    void go(parseRoute(location.pathname, location.hash));
  }, [snap.roomsLoaded]);
  useEffect(() => {
    const onPop = () => void go(parseRoute(location.pathname, location.hash));
    window.addEventListener('popstate', onPop);
    return () => window.removeEventListener('popstate', onPop);
  }, [client]);
  // The address changes in the same frame as the room shown (a layout effect, before paint).
  useLayoutEffect(() => {
    if (!routed.current) return;
    const room = snap.active ? snap.rooms[snap.active] : undefined;
    const peer = room?.kind === 'dm' ? dmPeer(room.name, snap.me, Object.values(snap.people))?.username : undefined;
    // A DM whose other user is not known yet keeps the address it has.
    if (room?.kind === 'dm' && !peer) return;
    const path = room ? roomPath(room, peer) : '/';
    if (path !== location.pathname) history.pushState(null, '', path);
  }, [snap.active, snap.roomsLoaded]);

  // The tab's title and icon count unread messages, so a background tab shows that something
  // came (set in the frame the badges change).
  const unreadTotal = Object.values(snap.rooms).reduce((n, r) => n + unreadCount(r, snap.me.id), 0);
  useLayoutEffect(() => {
    document.title = unreadTotal > 0 ? `(${unreadTotal}) ScalifyChat` : 'ScalifyChat';
    showCountOnIcon(unreadTotal);
  }, [unreadTotal]);
  // Signed out: the sign-in screen counts nothing.
  useEffect(() => () => { document.title = 'ScalifyChat'; showCountOnIcon(0); }, []);
  const [admin, setAdmin] = useState(false);
  const [maxBytes, setMaxBytes] = useState(DEFAULT_MAX_MESSAGE_BYTES);
  // The server's upload limit; unknown (or uploads off) until it says.
  const [maxUpload, setMaxUpload] = useState<number | undefined>();
  const [adminOpen, setAdminOpen] = useState(false);
  const [settingsOpen, setSettingsOpen] = useState(false);
  // Message search, over every room or the one open when it began.
  const [searchOpen, setSearchOpen] = useState<{ room?: string } | undefined>();
  const openSearch = () => {
    setAdminOpen(false);
    setSettingsOpen(false);
    setSearchOpen({ room: client.snapshot.active });
  };
  useEffect(() => {
    api.me(session.token).then((m) => {
      setAdmin(m.admin);
      if (m.limits) {
        setMaxBytes(m.limits.max_message_bytes);
        setMaxUpload(m.limits.max_upload_bytes ?? undefined);
      }
    }).catch(() => setAdmin(false));
  }, [session.token]);
  useEffect(() => {
    if (snap.active) { setAdminOpen(false); setSettingsOpen(false); setSearchOpen(undefined); }
  }, [snap.active]);
  const openAdmin = () => {
    client.open(undefined);
    setSettingsOpen(false);
    setSearchOpen(undefined);
    setAdminOpen(true);
  };
  const openSettings = () => {
    client.open(undefined);
    setAdminOpen(false);
    setSearchOpen(undefined);
    setSettingsOpen(true);
  };

  // Keyboard: Ctrl/Cmd+K finds a room by name; Ctrl/Cmd+Shift+F searches messages;
  // Alt+Up/Down moves between rooms in the sidebar's order; Esc closes the switcher, then the
  // search, settings or admin pane. Keyboard
  // listeners and focus are set in layout effects, before the browser paints: a key pressed
  // as soon as a pane or dialog shows reaches the handler that knows it is open.
  const [switcher, setSwitcher] = useState(false);
  useLayoutEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'k') {
        e.preventDefault();
        setSwitcher(true);
      } else if ((e.ctrlKey || e.metaKey) && e.shiftKey && e.key.toLowerCase() === 'f') {
        e.preventDefault();
        openSearch();
      } else if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
        const order = sidebarOrder(client.snapshot);
        if (!order.length) return;
        e.preventDefault();
        const at = client.snapshot.active ? order.indexOf(client.snapshot.active) : -1;
        const next = e.key === 'ArrowDown' ? (at + 1) % order.length : (at <= 0 ? order.length - 1 : at - 1);
        client.open(order[next]);
      } else if (e.key === 'Escape') {
        if (switcher) setSwitcher(false);
        else if (searchOpen) setSearchOpen(undefined);
        else if (settingsOpen) setSettingsOpen(false);
        else if (adminOpen) setAdminOpen(false);
      }
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [client, switcher, settingsOpen, adminOpen, searchOpen]);

  return (
    <div class="layout" data-view={active || adminOpen || settingsOpen || searchOpen ? 'room' : 'list'}>
      {switcher && <Switcher snap={snap} onPick={(name) => { setSwitcher(false); setSettingsOpen(false); setAdminOpen(false); client.open(name); }} onClose={() => setSwitcher(false)} />}
      {snap.connection !== 'connected' && (
        <div class="banner" role="status">{snap.connection === 'connecting' ? 'Connecting…' : 'Connection lost — reconnecting…'}</div>
      )}
      <Sidebar client={client} snap={snap} onSignOut={onSignOut} onAdmin={admin ? openAdmin : undefined} onSettings={openSettings} onSearch={openSearch}
        onRoom={() => { setSearchOpen(undefined); setSettingsOpen(false); setAdminOpen(false); }} />
      <main class="main">
        {searchOpen
          ? <SearchPane token={session.token} snap={snap} room={searchOpen.room} onClose={() => setSearchOpen(undefined)}
              onPick={(m) => { setSearchOpen(undefined); void client.openAt(m.room, m.seq); }} />
          : settingsOpen
          ? <SettingsPane token={session.token} client={client} settings={snap.settings} onClose={() => setSettingsOpen(false)} onGone={onSignOut} />
          : adminOpen
          ? <AdminPane token={session.token} onClose={() => setAdminOpen(false)} />
          : active ? <RoomPane key={active.name} client={client} snap={snap} room={active} maxBytes={maxBytes} maxUpload={maxUpload} admin={admin} /> : <Welcome snap={snap} />}
      </main>
    </div>
  );
}

/** The main area with no room open: a first-run welcome, or a pointer to the sidebar. */
function Welcome({ snap }: { snap: Snapshot }) {
  const rooms = Object.keys(snap.rooms).length;
  if (!snap.roomsLoaded) return <p class="empty">Loading your rooms…</p>;
  if (rooms > 0) return <p class="empty">Pick a room, or press Ctrl+K to find one.</p>;
  return (
    <section class="empty welcome" aria-label="Welcome">
      <h1>Welcome to ScalifyChat, {snap.me.username}</h1>
      <p>You are not in any room yet.</p>
      <ul>
        <li>{snap.discover.length > 0 ? `Join one of the ${snap.discover.length} public rooms under Browse rooms in the sidebar,` : 'Create the first room with the + next to Rooms,'}</li>
        <li>or message someone by their username with the + next to Direct messages.</li>
      </ul>
    </section>
  );
}

function Avatar({ user, title, small }: { user: UserRef; title?: string; small?: boolean }) {
  const a = avatarOf(user);
  return <span class={`avatar${small ? ' small' : ''} av-${a.colour}`} aria-hidden="true" title={title}>{a.initials}</span>;
}

/** How many have read up to here: small avatars, at most five and a "+n". */
function Receipts({ seq, users }: { seq: number; users: UserRef[] }) {
  const names = users.map((u) => u.username).join(', ');
  return (
    // Receipts move as members read: not news to announce in the live log.
    <div class="receipts" data-seq={seq} aria-live="off">
      {users.slice(0, 5).map((u) => <Avatar key={u.id} user={u} title={`Read by ${u.username}`} small />)}
      {users.length > 5 && <span class="more-readers" aria-hidden="true" title={`Read by ${names}`}>+{users.length - 5}</span>}
      <span class="sr-only">Read by {names}</span>
    </div>
  );
}

/** A user's card: their name and whether they are here, Message (a DM) and Block. */
function ProfileCard({ user, me, client, online, onClose }: { user: UserRef; me: UserRef; client: ChatClient; online: boolean; onClose: () => void }) {
  const [note, setNote] = useState('');
  const close = useRef<HTMLButtonElement>(null);
  useLayoutEffect(() => {
    close.current?.focus();
    const onKey = (e: KeyboardEvent) => { if (e.key === 'Escape') onClose(); };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);
  const run = (work: Promise<unknown>, done: string) => void work.then(() => setNote(done), (e) => setNote(e instanceof Error ? e.message : 'failed'));
  return (
    <div class="scrim" onClick={onClose}>
      <div class="card profile" role="dialog" aria-modal="true" aria-label={`Profile of ${user.username}`} onClick={(e) => e.stopPropagation()}>
        <Avatar user={user} />
        <h2>{user.username}</h2>
        <p class="muted">{user.id === me.id ? 'You' : online ? 'Online in this room' : 'Not in this room right now'}</p>
        {user.id !== me.id && (
          <p class="actions">
            <button class="primary" onClick={() => run(client.openDm(user.username).then((room) => { client.open(room); onClose(); }), '')}>Message</button>
            <button onClick={() => run(client.block(user.username), `${user.username} is blocked: they cannot message you or add you to rooms`)}>Block</button>
          </p>
        )}
        {note && <p role="status">{note}</p>}
        <button ref={close} class="link" onClick={onClose}>Close</button>
      </div>
    </div>
  );
}

/** The rooms as the sidebar lists them: rooms by name, then DMs. */
function sidebarOrder(snap: Snapshot): string[] {
  const rooms = Object.values(snap.rooms);
  return [
    ...rooms.filter((r) => r.kind !== 'dm').sort((a, b) => a.name.localeCompare(b.name)),
    ...rooms.filter((r) => r.kind === 'dm'),
  ].map((r) => r.name);
}

/** Ctrl/Cmd+K: type part of a room's or a DM's name, Up/Down to choose, Enter to open. */
function Switcher({ snap, onPick, onClose }: { snap: Snapshot; onPick: (room: string) => void; onClose: () => void }) {
  const [query, setQuery] = useState('');
  const [at, setAt] = useState(0);
  const box = useRef<HTMLInputElement>(null);
  useLayoutEffect(() => { box.current?.focus(); }, []);
  const q = query.trim().toLowerCase();
  const matches = sidebarOrder(snap)
    .map((name) => ({ name, title: roomTitle(snap.rooms[name], snap) }))
    .filter((r) => r.title.toLowerCase().includes(q))
    .slice(0, 20);
  const pick = (i: number) => { if (matches[i]) onPick(matches[i].name); };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'ArrowDown') { e.preventDefault(); setAt(Math.min(at + 1, matches.length - 1)); }
    else if (e.key === 'ArrowUp') { e.preventDefault(); setAt(Math.max(at - 1, 0)); }
    else if (e.key === 'Enter') { e.preventDefault(); pick(at); }
    else if (e.key === 'Escape') { e.preventDefault(); onClose(); }
  };
  return (
    <div class="scrim" onClick={onClose}>
      <div class="switcher" role="dialog" aria-modal="true" aria-label="Jump to a room" onClick={(e) => e.stopPropagation()}>
        <input ref={box} value={query} placeholder="Jump to a room or a person…" aria-label="Room or person"
          role="combobox" aria-expanded="true" aria-controls="switcher-list"
          aria-activedescendant={matches[at] ? `switch-${at}` : undefined}
          onInput={(e) => { setQuery(e.currentTarget.value); setAt(0); }} onKeyDown={onKey} />
        <ul id="switcher-list" role="listbox">
          {matches.map((r, i) => (
            <li key={r.name} id={`switch-${i}`} role="option" aria-selected={i === at} class={i === at ? 'selected' : ''}
              onClick={() => pick(i)}>{r.title}</li>
          ))}
          {matches.length === 0 && <li class="none">No room or person by that name</li>}
        </ul>
      </div>
    </div>
  );
}

function Sidebar({ client, snap, onSignOut, onAdmin, onSettings, onSearch, onRoom }: {
  client: ChatClient; snap: Snapshot; onSignOut: () => void; onAdmin?: () => void; onSettings: () => void; onSearch: () => void;
  /** A room of the list was picked (the open room too: a pane over it closes). */
  onRoom: () => void;
}) {
  const rooms = Object.values(snap.rooms);
  const [dialog, setDialog] = useState<'room' | 'dm' | undefined>();
  const entry = (r: RoomView) => {
    const unread = unreadCount(r, snap.me.id);
    // In a DM every message is addressed to us: its unread badge says it all.
    const mentions = r.kind === 'dm' ? 0 : mentionCount(r, snap.me.id);
    const muted = r.level === 'none';
    return (
      <li key={r.name}>
        <button class={`room-link${snap.active === r.name ? ' active' : ''}`} aria-current={snap.active === r.name ? 'page' : undefined}
          onClick={() => { onRoom(); client.open(r.name); }}>
          <span class="name" title={roomTitle(r, snap)}>
            {roomTitle(r, snap)}{r.kind === 'private' && <span class="tag"> private</span>}{muted && <span class="tag muted-tag"> muted</span>}
          </span>
          {mentions > 0 && (
            <span class="badge mention" aria-label={`${mentions} ${mentions === 1 ? 'mention' : 'mentions'}`}>@{mentions > 99 ? '99+' : mentions}</span>
          )}
          {unread > 0 && <span class={`badge${muted ? ' quiet' : ''}`} aria-label={`${unread} unread`}>{unread > 99 ? '99+' : unread}</span>}
        </button>
      </li>
    );
  };
  return (
    <nav class="sidebar" aria-label="Rooms">
      <header class="me">
        <strong>ScalifyChat</strong>
        <span class="who">{snap.me.username}</span>
        {onAdmin && <button class="link" onClick={onAdmin}>Admin</button>}
        <button class="link" onClick={onSettings}>Settings</button>
        <button class="link" onClick={onSignOut}>Sign out</button>
      </header>
      <button class="search-open" onClick={onSearch} title="Search messages (Ctrl+Shift+F)">
        <span aria-hidden="true">⌕</span> Search messages
      </button>
      <h2 class="with-add">Rooms <button class="add" aria-label="New room" title="New room" onClick={() => setDialog('room')}>+</button></h2>
      <ul class="rooms">{rooms.filter((r) => r.kind !== 'dm').sort((a, b) => a.name.localeCompare(b.name)).map(entry)}</ul>
      <h2 class="with-add">Direct messages <button class="add" aria-label="New direct message" title="New direct message" onClick={() => setDialog('dm')}>+</button></h2>
      <ul class="rooms">{rooms.filter((r) => r.kind === 'dm').map(entry)}</ul>
      {dialog === 'dm' && (
        <Dialog title="New direct message" onClose={() => setDialog(undefined)}>
          <InlineForm label="Message a user" placeholder="username" action="Open"
            run={async (username) => { await client.openDm(username); setDialog(undefined); }} />
        </Dialog>
      )}
      {dialog === 'room' && (
        <Dialog title="New room" onClose={() => setDialog(undefined)}>
          <NewRoomForm client={client} onDone={() => setDialog(undefined)} />
        </Dialog>
      )}
      {snap.discover.length > 0 && (
        <>
          <h2>Browse rooms</h2>
          <ul class="rooms">
            {snap.discover.map((r) => (
              <li key={r.name} class="discover">
                <span class="name" title={`#${r.name}`}>#{r.name}</span>
                <button onClick={() => client.join(r.name)} aria-label={`Join ${r.name}`}>Join</button>
              </li>
            ))}
          </ul>
        </>
      )}
    </nav>
  );
}

/**
 * Message search: a query over every room of mine or the one open when the search began;
 * hits newest first, each the room, sender, time and the words around the match (marked),
 * opening the room at the message; more on demand.
 */
function SearchPane({ token, snap, room, onPick, onClose }: {
  token: string; snap: Snapshot; room?: string; onPick: (m: Message) => void; onClose: () => void;
}) {
  const [query, setQuery] = useState('');
  const [scope, setScope] = useState<'all' | 'room'>('all');
  const [asked, setAsked] = useState<{ q: string; room?: string } | undefined>();
  const [hits, setHits] = useState<SearchHit[]>([]);
  // The words the server says the query looks for: marked in the fragments.
  const [words, setWords] = useState<string[]>([]);
  const [more, setMore] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const box = useRef<HTMLInputElement>(null);
  useLayoutEffect(() => { box.current?.focus(); }, []);
  const fetchPage = async (q: string, inRoom: string | undefined, before?: string) => {
    setBusy(true);
    setError('');
    try {
      const page = await api.search(token, q, { room: inRoom, before });
      setHits((h) => (before ? [...h, ...page.results] : page.results));
      setWords(page.words);
      setMore(page.has_more);
    } catch (err) {
      setError((err as Error).message);
      if (!before) setHits([]);
      setMore(false);
    } finally {
      setBusy(false);
    }
  };
  const run = (q: string, where: 'all' | 'room') => {
    const inRoom = where === 'room' ? room : undefined;
    setAsked({ q, room: inRoom });
    setHits([]);
    setMore(false);
    void fetchPage(q, inRoom);
  };
  const submit = (e: Event) => {
    e.preventDefault();
    const q = query.trim();
    if (q) run(q, scope);
  };
  // A new scope asks again: results always answer what the form shows.
  const changeScope = (where: 'all' | 'room') => {
    setScope(where);
    if (asked) run(asked.q, where);
  };
  const titleOf = (name: string) => (snap.rooms[name] ? roomTitle(snap.rooms[name], snap) : `#${name}`);
  return (
    <section class="admin search-pane" aria-label="Search messages">
      <header class="room-head">
        <button class="back" onClick={onClose} aria-label="Close search">←</button>
        <h1>Search messages</h1>
      </header>
      <div class="admin-body">
      <form class="search-form" role="search" onSubmit={submit}>
        <input ref={box} type="search" value={query} maxLength={200} aria-label="Search for"
          placeholder={'Words, "a phrase", -without'} onInput={(e) => setQuery(e.currentTarget.value)} />
        {room && (
          <select aria-label="Where" value={scope} onChange={(e) => changeScope(e.currentTarget.value as 'all' | 'room')}>
            <option value="all">All my rooms</option>
            <option value="room">In {titleOf(room)}</option>
          </select>
        )}
        <button type="submit" disabled={busy || !query.trim()}>Search</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <p class="none" role="status">
        {asked && !error && !busy && hits.length === 0 ? `No messages match “${asked.q}”.` : ''}
      </p>
      <ul class="search-results" aria-label="Results">
        {hits.map(({ message: m, fragment }) => (
          <li key={m.id}>
            <button class="search-hit" onClick={() => onPick(m)}>
              <span class="hit-head">
                <span class="hit-room">{titleOf(m.room)}</span>
                <span class="hit-sender">{m.sender.username}</span>
                <time dateTime={new Date(m.ts).toISOString()}>{dayFmt.format(m.ts)}, {timeFmt.format(m.ts)}</time>
              </span>
              <span class="hit-text">
                {highlight(fragment, words).map((part, i) => (part.mark ? <mark key={i}>{part.text}</mark> : <Fragment key={i}>{part.text}</Fragment>))}
              </span>
            </button>
          </li>
        ))}
      </ul>
      {more && asked && (
        <button class="more" disabled={busy} onClick={() => void fetchPage(asked.q, asked.room, hits[hits.length - 1]?.message.id)}>
          {busy ? 'Loading…' : 'More results'}
        </button>
      )}
      </div>
    </section>
  );
}

/** One text field and a button; shows the server's error inline. */
function InlineForm({ label, placeholder, action, run }: { label: string; placeholder: string; action: string; run: (v: string) => Promise<void> }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState('');
  const submit = async (e: Event) => {
    e.preventDefault();
    setError('');
    try {
      await run(value.trim());
      setValue('');
    } catch (err) {
      setError(err instanceof Error ? err.message : 'failed');
    }
  };
  return (
    <form class="inline" onSubmit={submit}>
      <label>
        <span class="label">{label}</span>
        <span class="row">
          <input required placeholder={placeholder} value={value} onInput={(e) => setValue(e.currentTarget.value)} />
          <button type="submit">{action}</button>
        </span>
      </label>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

/** A modal dialog: Esc or a click outside closes it; focus starts in its first field. */
function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: preact.ComponentChildren }) {
  const box = useRef<HTMLDivElement>(null);
  useLayoutEffect(() => {
    box.current?.querySelector<HTMLElement>('input, select, button')?.focus();
    const onKey = (e: KeyboardEvent) => { if (e.key === 'Escape') onClose(); };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);
  return (
    <div class="scrim" onClick={onClose}>
      <div ref={box} class="card dialog" role="dialog" aria-modal="true" aria-label={title} onClick={(e) => e.stopPropagation()}>
        <h2>{title}</h2>
        {children}
        <button class="link" onClick={onClose}>Cancel</button>
      </div>
    </div>
  );
}

function NewRoomForm({ client, onDone }: { client: ChatClient; onDone: () => void }) {
  const [name, setName] = useState('');
  const [kind, setKind] = useState<'public' | 'private'>('public');
  const [error, setError] = useState('');
  const submit = async (e: Event) => {
    e.preventDefault();
    setError('');
    try {
      await client.createRoom(name.trim(), kind);
      setName('');
      onDone();
    } catch (err) {
      setError(err instanceof Error ? err.message : 'failed');
    }
  };
  return (
    <form class="inline" onSubmit={submit}>
      <label>
        <span class="label">New room</span>
        <span class="row">
          <input required placeholder="room-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          <select aria-label="Visibility" value={kind} onChange={(e) => setKind(e.currentTarget.value as 'public' | 'private')}>
            <option value="public">public</option>
            <option value="private">private</option>
          </select>
          <button type="submit">Create</button>
        </span>
      </label>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

// ---- one room ---------------------------------------------------------------------------

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });

/** A message's text: links clickable, `@name`s emphasised (ours, and `@room` when it did
 * mention the room, the more). `me`: our username, when the text is someone's message. */
function Text({ text, me, room }: { text: string; me?: string; room?: boolean }) {
  return (
    <>
      {richText(text).map((p, i) => ('href' in p
        ? <a key={i} href={p.href} target="_blank" rel="noopener noreferrer nofollow">{p.text}</a>
        : 'mention' in p
          ? <strong key={i} class={`mention-name${p.mention === me || (room && p.mention === 'room') ? ' to-me' : ''}`}>{p.text}</strong>
          : <span key={i}>{p.text}</span>))}
    </>
  );
}

/** The reactions offered in one click. */
const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢', '👀', '✅'];

/** A message's text with its Markdown ([markdown.ts](./markdown.ts)) as elements; a text with
 * none renders exactly as plain text does. */
function Rich({ text, me, room }: { text: string; me?: string; room?: boolean }) {
  const tree = useMemo(() => parseMarkdown(text), [text]);
  // `:shortcode:`s become emoji once the table has loaded (it loads the first time needed).
  const [emoji, setEmoji] = useState(emojiTable());
  useEffect(() => {
    if (!emoji && mayHaveShortcodes(text)) void loadEmoji().then(setEmoji, () => {});
  }, [text]);
  const shown = (t: string) => (emoji ? expandShortcodes(t, emoji.byName) : t);
  if (isPlain(tree)) return <Text text={shown(tree[0].c[0].text)} me={me} room={room} />;
  // Inside a link, text is only text (no link in a link).
  const inlines = (list: Inline[], linked = false): preact.ComponentChildren => list.map((n, i) => {
    switch (n.t) {
      case 'text': return linked ? <span key={i}>{shown(n.text)}</span> : <Text key={i} text={shown(n.text)} me={me} room={room} />;
      case 'code': return <code key={i}>{n.text}</code>;
      case 'link': return <a key={i} href={n.href} target="_blank" rel="noopener noreferrer nofollow">{inlines(n.c, true)}</a>;
      case 'strong': return <strong key={i}>{inlines(n.c, linked)}</strong>;
      case 'em': return <em key={i}>{inlines(n.c, linked)}</em>;
      default: return <del key={i}>{inlines(n.c, linked)}</del>;
    }
  });
  const blocks = (list: Block[]): preact.ComponentChildren => list.map((b, i) => {
    switch (b.t) {
      case 'p': return <div key={i} class="md-p">{inlines(b.c)}</div>;
      case 'code': return <pre key={i}><code>{b.text}</code></pre>;
      case 'quote': return <blockquote key={i}>{blocks(b.c)}</blockquote>;
      default: {
        const items = b.items.map((item, j) => <li key={j}>{blocks(item)}</li>);
        return b.ordered ? <ol key={i} start={b.start}>{items}</ol> : <ul key={i}>{items}</ul>;
      }
    }
  });
  // One paragraph: its inline content directly, as a plain text would be.
  return <>{tree.length === 1 && tree[0].t === 'p' ? inlines(tree[0].c) : blocks(tree)}</>;
}

/** A searchable grid of every emoji; `onPick` gets the one clicked. Esc closes it. */
function EmojiPicker({ label, onPick, onClose }: { label: string; onPick: (emoji: string) => void; onClose: () => void }) {
  const [table, setTable] = useState(emojiTable());
  const [query, setQuery] = useState('');
  useEffect(() => { if (!table) void loadEmoji().then(setTable, () => {}); }, []);
  const found = table ? searchEmoji(table.all, query) : [];
  return (
    <div class="picker" role="dialog" aria-label={label} onKeyDown={(e) => { if (e.key === 'Escape') { e.stopPropagation(); onClose(); } }}>
      <input type="search" placeholder="Search emoji" aria-label="Search emoji" value={query} autoFocus
        onInput={(e) => setQuery((e.currentTarget as HTMLInputElement).value)} />
      <div class="picker-grid">
        {!table && <p class="hint">Loading…</p>}
        {table && found.length === 0 && <p class="hint">No emoji named so.</p>}
        {found.map((e) => (
          <button key={e.emoji} type="button" title={`:${e.names[0]}:`} aria-label={e.names[0].replace(/_/g, ' ')} onClick={() => onPick(e.emoji)}>{e.emoji}</button>
        ))}
      </div>
    </div>
  );
}

const LEVELS: { value: NotifyLevel; label: string }[] = [
  { value: 'all', label: 'All messages' },
  { value: 'mentions', label: 'Mentions only' },
  { value: 'none', label: 'Nothing (muted)' },
];

/** A file being uploaded from the composer, or ready to send. */
interface PendingFile {
  key: string;
  name: string;
  size: number;
  /** Fraction sent, 0 to 1. */
  progress: number;
  done?: Attachment;
  error?: string;
  abort?: () => void;
}

function RoomPane({ client, snap, room, maxBytes, maxUpload, admin }: {
  client: ChatClient; snap: Snapshot; room: RoomView; maxBytes: number; maxUpload?: number; admin: boolean;
}) {
  const list = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const loadingOlder = useRef(false);
  // "New messages" marks what was unread when the room was opened (not what arrives while
  // the reader watches).
  const unreadAtOpen = snap.opened?.room === room.name ? snap.opened : { after: room.lastRead, upTo: room.lastRead };
  const [showMembers, setShowMembers] = useState(false);
  // A failed send moved back to the composer (Edit).
  const [seed, setSeed] = useState<{ text: string } | undefined>();
  // The profile card of a sender whose name was clicked.
  const [profile, setProfile] = useState<UserRef | undefined>();
  // What the composer is doing besides writing a new message: answering one, or editing ours.
  const [replyTo, setReplyTo] = useState<ReplyPreview | undefined>();
  const [editing, setEditing] = useState<Message | undefined>();
  // The message whose emoji palette is open, and whose full picker.
  const [picking, setPicking] = useState<string | undefined>();
  // On a touch screen a message's actions open with a long press (there is no hover): the
  // message pressed, until a touch elsewhere or Esc.
  const [pressed, setPressed] = useState<string | undefined>();
  const pressTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const pressStart = useRef<{ x: number; y: number } | undefined>(undefined);
  const endPress = () => clearTimeout(pressTimer.current);
  useEffect(() => {
    if (!pressed) return;
    const close = (e: Event) => {
      if (e instanceof KeyboardEvent ? e.key === 'Escape' : !(e.target as Element).closest?.(`[data-id="${pressed}"]`)) setPressed(undefined);
    };
    document.addEventListener('pointerdown', close);
    document.addEventListener('keydown', close);
    return () => {
      document.removeEventListener('pointerdown', close);
      document.removeEventListener('keydown', close);
    };
  }, [pressed]);
  const [pickingMore, setPickingMore] = useState<string | undefined>();
  const [changeError, setChangeError] = useState('');
  // The room's owner, and a server admin, may delete anyone's message here.
  const [owner, setOwner] = useState<string | null>(null);
  useEffect(() => {
    setReplyTo(undefined);
    setEditing(undefined);
    setOwner(null);
    client.members(room.name).then((m) => setOwner(m.owner), () => {});
  }, [room.name]);
  // Files from the attach button, a drop or a paste: uploaded at once, sent with the next
  // message (the first carries the text, each file is a message of its own).
  const [files, setFiles] = useState<PendingFile[]>([]);
  const [dragging, setDragging] = useState(false);
  const setFile = (key: string, patch: Partial<PendingFile>) =>
    setFiles((all) => all.map((f) => (f.key === key ? { ...f, ...patch } : f)));
  const addFiles = (picked: Iterable<File>) => {
    for (const file of picked) {
      const key = crypto.randomUUID();
      if (maxUpload !== undefined && file.size > maxUpload) {
        setFiles((all) => [...all, { key, name: file.name, size: file.size, progress: 0, error: `larger than the ${formatBytes(maxUpload)} limit` }]);
        continue;
      }
      const up = client.upload(room.name, file, (progress) => setFile(key, { progress }));
      setFiles((all) => [...all, { key, name: file.name || 'pasted file', size: file.size, progress: 0, abort: up.abort }]);
      up.done.then(
        (done) => setFile(key, { done, progress: 1, abort: undefined }),
        (e: Error) => setFile(key, { error: e.message, abort: undefined }),
      );
    }
  };
  // Uploads still going when the room is left are stopped (their marker is swept later).
  const filesNow = useRef(files);
  filesNow.current = files;
  useEffect(() => () => filesNow.current.forEach((f) => f.abort?.()), []);
  const canAttach = !editing && maxUpload !== undefined;
  const dropFile = (f: PendingFile) => {
    f.abort?.();
    setFiles((all) => all.filter((x) => x.key !== f.key));
  };
  // A send refused for good goes back to the composer to be mended (its text: a file it
  // carried may be what was refused, and is uploaded again if still wanted).
  const editFailed = (o: Outgoing) => setSeed({ text: client.dismiss(room.name, o.client_id)?.text ?? '' });
  const ready = files.filter((f) => f.done);
  const uploading = files.some((f) => !f.done && !f.error);
  const change = (event: 'edit' | 'delete' | 'react' | 'unreact', arg: { id: string; text?: string; emoji?: string }) => {
    setChangeError('');
    void client.change(room.name, event, arg).then((err) => { if (err) setChangeError(err); });
  };
  const startReply = (m: Message) => {
    setEditing(undefined);
    setReplyTo(previewOf(m));
  };
  // What the composer held when an edit began: it comes back when the edit ends.
  const draftBeforeEdit = useRef('');
  const draftKey = `scalify.draft:${snap.me.id}:${room.name}`;
  const startEdit = (m: Message) => {
    setReplyTo(undefined);
    if (!editing) draftBeforeEdit.current = localStorage.getItem(draftKey) ?? '';
    setEditing(m);
    setSeed({ text: m.text });
  };
  const endCompose = () => {
    if (editing) setSeed({ text: draftBeforeEdit.current });
    setReplyTo(undefined);
    setEditing(undefined);
  };
  const copyLink = (m: Message) => {
    const peer = room.kind === 'dm' ? dmPeer(room.name, snap.me, Object.values(snap.people))?.username : undefined;
    const url = `${location.origin}${roomPath(room, peer)}#${m.seq}`;
    void navigator.clipboard?.writeText(url).catch(() => {});
  };

  // While older messages load: the list's height and first message before they came, so the
  // view can stay on what the reader was looking at once they are added above.
  const olderPending = useRef<{ height: number; firstId?: string } | null>(null);

  const loadOlder = () => {
    const el = list.current;
    if (!el || loadingOlder.current) return;
    loadingOlder.current = true;
    olderPending.current = { height: el.scrollHeight, firstId: room.messages[0]?.id };
    void client.loadOlder(room.name).finally(() => {
      loadingOlder.current = false;
      // Nothing was added above (no older page): forget the measurement.
      const now = client.snapshot.rooms[room.name]?.messages[0]?.id;
      if (olderPending.current && now === olderPending.current.firstId) olderPending.current = null;
    });
  };

  // Scrolled up from the newest messages: new ones are not marked read, and a button offers to
  // jump down to them.
  const [below, setBelow] = useState(false);
  const onScroll = () => {
    const el = list.current;
    if (!el) return;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (bottom !== atBottom.current) client.viewing(room.name, bottom);
    atBottom.current = bottom;
    setBelow(!bottom);
    if (el.scrollTop < 80 && room.hasMore) loadOlder();
  };
  const jumpToLatest = () => {
    const el = list.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    onScroll();
  };
  const newBelow = below ? unreadCount(room, snap.me.id) : 0;

  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    const pending = olderPending.current;
    if (pending && room.messages[0]?.id !== pending.firstId) {
      // Older messages were added above: keep what the reader was looking at in place.
      el.scrollTop += el.scrollHeight - pending.height;
      olderPending.current = null;
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [room.messages, room.outgoing]);

  // A link to a message was followed: bring it into view and mark it.
  useEffect(() => {
    const f = snap.focus;
    if (!f || f.room !== room.name) return;
    const el = document.getElementById(`m${f.seq}`);
    if (!el) return;
    atBottom.current = false;
    el.scrollIntoView({ block: 'center' });
    el.classList.add('focused');
  }, [snap.focus, room.messages]);
  useEffect(() => {
    const onHash = () => {
      const seq = parseRoute(location.pathname, location.hash);
      if (seq.kind !== 'home' && seq.seq) void client.openAt(room.name, seq.seq);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, [room.name]);

  // A short room does not scroll, so scrolling cannot ask for older pages: ask here.
  useEffect(() => {
    const el = list.current;
    if (el && room.hasMore && el.scrollHeight <= el.clientHeight) loadOlder();
  }, [room.messages.length, room.hasMore]);

  // A far search hit or link shows a window of the log, not its newest messages.
  const windowed = room.windowEnd !== undefined;
  const groups = groupMessages(shownMessages(room));
  // Hidden when our own receipts are off (the server then sends none of others' either).
  const readers = snap.settings?.read_receipts === false ? new Map<number, UserRef[]>() : placeReceipts(room, snap.me.id);
  const firstUnread = room.messages.find((m) => m.seq > unreadAtOpen.after && m.seq <= unreadAtOpen.upTo && m.sender.id !== snap.me.id)?.id;
  const typing = client.typingIn(room.name);
  const online = snap.online[room.name] ?? [];
  let lastDay = '';
  const placed = placeOutgoing(groups, room.outgoing);
  const outgoingEntry = (o: Outgoing) => (
    <article class="group mine outgoing" key={o.client_id} data-status={o.status}>
      {o.reply_to && <p class="quote"><span class="quote-name">{o.reply_to.sender.username}</span> {o.reply_to.text}</p>}
      {o.text && <div class="msg"><Rich text={o.text} /></div>}
      {o.attachment && <p class="file-card pending"><FileIcon /> {o.attachment.name}</p>}
      {o.status === 'pending'
        ? <span class="status">sending…</span>
        : (
          // A failure that may pass (no answer, a node stopping, a rate limit) offers
          // Retry, and is made again by itself on reconnect; one that cannot (too long,
          // not allowed) offers Edit instead. Either can be dismissed.
          <span class="status failed" role="alert">
            Not sent{o.error ? `: ${o.error}` : ''}{' '}
            {o.retryable
              ? <button onClick={() => client.retry(room.name, o.client_id)}>Retry</button>
              : <button onClick={() => editFailed(o)}>Edit</button>}
            {' '}<button onClick={() => client.dismiss(room.name, o.client_id)} aria-label="Dismiss">Dismiss</button>
          </span>
        )}
    </article>
  );

  return (
    <section class={`room${dragging ? ' dragging' : ''}`} aria-label={roomTitle(room, snap)}
      onDragOver={(e) => {
        if (!canAttach || !e.dataTransfer?.types.includes('Files')) return;
        e.preventDefault();
        setDragging(true);
      }}
      onDragLeave={(e) => { if (e.currentTarget === e.target) setDragging(false); }}
      onDrop={(e) => {
        if (!canAttach || !e.dataTransfer?.files.length) return;
        e.preventDefault();
        setDragging(false);
        addFiles(e.dataTransfer.files);
      }}>
      {dragging && <div class="drop-hint" aria-hidden="true">Drop files to upload them to {roomTitle(room, snap)}</div>}
      <header class="room-head">
        <button class="back" onClick={() => client.open(undefined)} aria-label="Back to rooms">←</button>
        <h1 title={roomTitle(room, snap)}>{roomTitle(room, snap)}</h1>
        <span class="online-count">{online.length} online</span>
        <select class="level" aria-label="Notifications" title="What notifies you in this room" value={room.level ?? 'all'}
          onChange={(e) => {
            const level = e.currentTarget.value as NotifyLevel;
            // Shows the level the server has until it answers (and if it refuses).
            e.currentTarget.value = room.level ?? 'all';
            void client.setLevel(room.name, level).catch((err) => alert(err.message));
          }}>
          {LEVELS.map((l) => <option key={l.value} value={l.value}>{l.label}</option>)}
        </select>
        <button class="link" aria-expanded={showMembers} onClick={() => setShowMembers(!showMembers)}>Members</button>
        {room.kind !== 'dm' && (
          <button class="link" onClick={() => {
            if (confirm(`Leave #${room.name}? You will stop getting its messages.`)) void client.leave(room.name).catch((e) => alert(e.message));
          }}>Leave</button>
        )}
      </header>
      <div class="room-body">
        <div class="messages" ref={list} onScroll={onScroll} role="log" aria-live="polite" aria-relevant="additions">
          {room.hasMore
            ? <p class="more">Loading older messages…</p>
            : (
              <p class="start">
                This is the start of <strong>{roomTitle(room, snap)}</strong>.
                {room.messages.length === 0 && room.outgoing.length === 0 && ' Nothing has been said here yet: say hello!'}
              </p>
            )}
          {groups.map((g, i) => {
            const dayChanged = g.day !== lastDay;
            lastDay = g.day;
            return (
              <div key={g.messages[0].id}>
                {placed.before[i].map(outgoingEntry)}
                {dayChanged && <div class="day" role="separator">{dayFmt.format(g.messages[0].ts)}</div>}
                <article class={`group${g.sender.id === snap.me.id ? ' mine' : ''}`}>
                  <header>
                    <Avatar user={g.sender} />
                    <button class="sender" onClick={() => setProfile(g.sender)} aria-haspopup="dialog">{g.sender.username}</button>
                    <a class="permalink" href={`#${g.messages[0].seq}`} aria-label={`Link to this message, ${timeFmt.format(g.messages[0].ts)}`}>
                      <time dateTime={new Date(g.messages[0].ts).toISOString()}>{timeFmt.format(g.messages[0].ts)}</time>
                    </a>
                  </header>
                  {g.messages.map((m: Message) => {
                    const forMe = mentionsMe(m, snap.me.id) && !m.deleted;
                    const mine = m.sender.id === snap.me.id;
                    const line = (
                      <div class={`entry${m.deleted ? ' deleted' : ''}${pressed === m.id ? ' pressed' : ''}`} id={`m${m.seq}`} data-seq={m.seq} data-id={m.id}
                        onPointerDown={(e) => {
                          if (e.pointerType !== 'touch') return;
                          endPress();
                          pressStart.current = { x: e.clientX, y: e.clientY };
                          pressTimer.current = setTimeout(() => setPressed(m.id), 500);
                        }}
                        onPointerUp={endPress} onPointerCancel={endPress}
                        onPointerMove={(e) => {
                          // A finger that moves is scrolling, not pressing.
                          const from = pressStart.current;
                          if (from && Math.hypot(e.clientX - from.x, e.clientY - from.y) > 10) endPress();
                        }}
                        onContextMenu={(e) => {
                          // The long press's own menu (copy, select) would cover the actions.
                          if (pressed === m.id) e.preventDefault();
                        }}>
                        {m.reply_to && (
                          <button class="quote" onClick={() => void client.openAt(room.name, m.reply_to!.seq)}
                            aria-label={`In reply to ${m.reply_to.sender.username}: ${m.reply_to.deleted ? 'a deleted message' : m.reply_to.text}`}>
                            <span class="quote-name">{m.reply_to.sender.username}</span>{' '}
                            {m.reply_to.deleted ? <em>deleted message</em> : m.reply_to.text}
                          </button>
                        )}
                        <div class={`msg${forMe ? ' mentioned' : ''}`} data-seq={m.seq} title={new Date(m.ts).toLocaleString()}>
                          {m.deleted
                            ? <em class="placeholder">This message was deleted.</em>
                            : m.text && <Rich text={m.text} me={snap.me.username.toLowerCase()} room={m.mention_room} />}
                          {m.attachment && !m.deleted && <AttachmentView client={client} room={room.name} file={m.attachment} />}
                          {m.edited_at !== undefined && !m.deleted && (
                            <span class="edited" title={`Edited ${new Date(m.edited_at).toLocaleString()}`}> (edited)</span>
                          )}
                        </div>
                        {m.reactions && (
                          <div class="reactions" role="group" aria-label="Reactions">
                            {Object.entries(m.reactions).map(([emoji, r]) => (
                              <button key={emoji} class="reaction" aria-pressed={r.me}
                                aria-label={`${emoji} ${r.count}${r.me ? ', including you' : ''}`}
                                onClick={() => change(r.me ? 'unreact' : 'react', { id: m.id, emoji })}>
                                <span aria-hidden="true">{emoji}</span> {r.count}
                              </button>
                            ))}
                          </div>
                        )}
                        {!m.deleted && (
                          <div class="actions" role="toolbar" aria-label="Message actions">
                            {/* Icons are drawn by CSS (`data-icon`): a message's text is its own. */}
                            <button onClick={() => startReply(m)} aria-label="Reply" title="Reply" data-icon="↩" />
                            <button onClick={() => setPicking(picking === m.id ? undefined : m.id)} aria-label="React" title="React" aria-expanded={picking === m.id} data-icon="☺" />
                            {mine && <button onClick={() => startEdit(m)} aria-label="Edit" title="Edit" data-icon="✎" />}
                            {(mine || owner === snap.me.id || admin) && (
                              <button onClick={() => { if (confirm('Delete this message for everyone?')) change('delete', { id: m.id }); }} aria-label="Delete" title="Delete" data-icon="🗑" />
                            )}
                            <button onClick={() => copyLink(m)} aria-label="Copy link" title="Copy link" data-icon="🔗" />
                          </div>
                        )}
                        {picking === m.id && (
                          <div class="palette" role="group" aria-label="Pick a reaction">
                            {QUICK_REACTIONS.map((emoji) => (
                              <button key={emoji} aria-label={`React with ${emoji}`} onClick={() => {
                                setPicking(undefined);
                                change(m.reactions?.[emoji]?.me ? 'unreact' : 'react', { id: m.id, emoji });
                              }}>{emoji}</button>
                            ))}
                            <button aria-label="More reactions" aria-expanded={pickingMore === m.id} onClick={() => setPickingMore(pickingMore === m.id ? undefined : m.id)}>…</button>
                          </div>
                        )}
                        {pickingMore === m.id && (
                          <EmojiPicker label="Pick a reaction" onClose={() => setPickingMore(undefined)} onPick={(emoji) => {
                            setPickingMore(undefined);
                            setPicking(undefined);
                            change(m.reactions?.[emoji]?.me ? 'unreact' : 'react', { id: m.id, emoji });
                          }} />
                        )}
                      </div>
                    );
                    const read = readers.get(m.seq);
                    return (
                      <Fragment key={m.id}>
                        {m.id === firstUnread && <div class="divider" role="separator">New messages</div>}
                        {forMe
                          ? <div class="mention-row"><span class="mention-mark" role="img" aria-label="Mentions you" title="Mentions you">@</span>{line}</div>
                          : line}
                        {read && <Receipts seq={m.seq} users={read} />}
                      </Fragment>
                    );
                  })}
                </article>
              </div>
            );
          })}
          {placed.end.map(outgoingEntry)}
          {windowed && (
            <p class="window-end" role="status">
              You are reading older messages.{' '}
              <button class="link" onClick={() => { atBottom.current = true; void client.toLatest(room.name); }}>Jump to the newest messages</button>
            </p>
          )}
        </div>
        {profile && <ProfileCard user={profile} me={snap.me} client={client} online={online.some((u) => u.id === profile.id)} onClose={() => setProfile(undefined)} />}
        {newBelow > 0 && !windowed && (
          <button class="jump" onClick={jumpToLatest}>↓ {newBelow} new {newBelow === 1 ? 'message' : 'messages'}</button>
        )}
        {showMembers && <Members client={client} room={room} online={online} me={snap.me} />}
      </div>
      <p class="typing" aria-live="polite">{typing.length > 0 && `${typing.map((u) => u.username).join(', ')} ${typing.length > 1 ? 'are' : 'is'} typing…`}</p>
      {changeError && <p class="change-error" role="alert">{changeError} <button class="link" onClick={() => setChangeError('')}>Dismiss</button></p>}
      {(replyTo || editing) && (
        <p class="composing" role="status">
          {editing ? 'Editing your message' : <>Replying to <strong>{replyTo!.sender.username}</strong>: {replyTo!.text}</>}
          {' '}<button class="link" onClick={endCompose}>Cancel</button>
        </p>
      )}
      {files.length > 0 && (
        <ul class="uploads" aria-label="Files to send">
          {files.map((f) => (
            <li key={f.key} class={f.error ? 'failed' : f.done ? 'ready' : 'sending'}>
              <span class="file-name" title={f.name}>{f.name}</span>
              <span class="file-size">{formatBytes(f.size)}</span>
              {f.error
                ? <span class="file-error" role="alert">Not uploaded: {f.error}</span>
                : f.done
                  ? <span class="file-state">ready</span>
                  : <progress max={1} value={f.progress} aria-label={`Uploading ${f.name}`} />}
              <button type="button" class="link" onClick={() => dropFile(f)} aria-label={`${f.done || f.error ? 'Remove' : 'Cancel'} ${f.name}`}>
                {f.done || f.error ? 'Remove' : 'Cancel'}
              </button>
            </li>
          ))}
        </ul>
      )}
      <Composer onSend={(text) => {
        atBottom.current = true;
        // What one writes goes below the newest messages: show them.
        if (windowed) void client.toLatest(room.name);
        if (editing) {
          if (text !== editing.text) change('edit', { id: editing.id, text });
          endCompose();
        } else if (ready.length) {
          ready.forEach((f, i) => void client.send(room.name, i === 0 ? text : '', undefined, 1, i === 0 ? replyTo : undefined, f.done));
          setFiles((all) => all.filter((f) => !f.done));
          setReplyTo(undefined);
        } else {
          void client.send(room.name, text, undefined, 1, replyTo);
          setReplyTo(undefined);
        }
      }} onTyping={() => client.typing(room.name)} label={`Message ${roomTitle(room, snap)}`} maxBytes={maxBytes}
        onCancel={endCompose} draftKey={draftKey} seed={seed}
        files={canAttach ? { onFiles: addFiles, ready: ready.length > 0, uploading } : undefined} />
    </section>
  );
}

// Icons drawn as SVG, not emoji: they look the same with or without an emoji font.
function PaperclipIcon() {
  return (
    <svg class="icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
      <path d="M21 11.5l-8.5 8.5a5 5 0 0 1-7-7L14 4.5a3.5 3.5 0 0 1 5 5L10.5 18a2 2 0 0 1-3-3L15 7.5"
        fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}

function FileIcon() {
  return (
    <svg class="icon file-icon" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
      <path d="M6 2h8l5 5v15H6z M14 2v5h5" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round" />
    </svg>
  );
}

/**
 * A message's file: an image as its preview (a click opens the full picture), anything else
 * as a card with its name, size and a download button. Files need the session's token, so
 * they are fetched and shown from local object URLs.
 */
function AttachmentView({ client, room, file }: { client: ChatClient; room: string; file: Attachment }) {
  const box = previewBox(file);
  const [src, setSrc] = useState<string | undefined>();
  const [error, setError] = useState('');
  useEffect(() => {
    if (!box) return;
    let live = true;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let held: { release: () => void } | undefined;
    // A page of many pictures can spend the request budget: a refused preview is asked for
    // again a little later, a few times.
    const load = (attempt: number) => {
      if (!live) return;
      const preview = client.previewUrl(room, file.id);
      held = preview;
      preview.url.then((u) => { if (live) setSrc(u); }, (e: ApiError) => {
        preview.release();
        if (!live) return;
        if (e.code === 'rate_limited' && attempt < 4) retry = setTimeout(() => load(attempt + 1), 1500 * attempt);
        else setError(e.message);
      });
    };
    load(1);
    return () => {
      live = false;
      clearTimeout(retry);
      held?.release();
    };
  }, [room, file.id]);
  const download = (open: boolean) => {
    setError('');
    // The window opens on the click (a window opened after a download has finished would be
    // a popup to block), and is shown the picture when it is here.
    const shown = open ? window.open('', '_blank') : null;
    if (shown) shown.opener = null;
    client.withFile(room, file.id, (url) => {
      if (shown) {
        shown.location.href = url;
        return;
      }
      const a = document.createElement('a');
      a.href = url;
      a.download = file.name;
      a.click();
    }).catch((e: Error) => {
      shown?.close();
      setError(e.message);
    });
  };
  if (box) {
    return (
      <div class="attachment">
        <button class="image" style={{ width: `${box.width}px`, height: `${box.height}px` }} onClick={() => download(true)}
          aria-label={`Open the picture ${file.name} (${file.width}×${file.height}, ${formatBytes(file.size)})`}>
          {src && <img src={src} alt={file.name} width={box.width} height={box.height} />}
        </button>
        {error && <span class="file-error" role="alert">{error}</span>}
      </div>
    );
  }
  return (
    <div class="attachment file-card">
      <FileIcon />
      <span class="file-name" title={file.name}>{file.name}</span>
      <span class="file-size">{formatBytes(file.size)}</span>
      <button class="link" onClick={() => download(false)} aria-label={`Download ${file.name}`}>Download</button>
      {error && <span class="file-error" role="alert">{error}</span>}
    </div>
  );
}

function Members({ client, room, online, me }: { client: ChatClient; room: RoomView; online: UserRef[]; me: UserRef }) {
  const [members, setMembers] = useState<UserRef[]>([]);
  const [owner, setOwner] = useState<string | null>(null);
  const [error, setError] = useState('');
  const [reload, setReload] = useState(0);
  useEffect(() => {
    client.members(room.name)
      .then((m) => { setMembers(m.members); setOwner(m.owner); })
      .catch(() => setMembers([]));
  }, [room.name, reload]);
  const act = (work: Promise<unknown>, done: string) =>
    work.then(() => { setError(done); setReload(reload + 1); }, (e: Error) => setError(e.message));
  const onlineIds = new Set(online.map((u) => u.id));
  const all = [...members, ...online.filter((u) => !members.some((m) => m.id === u.id))]
    .sort((a, b) => Number(onlineIds.has(b.id)) - Number(onlineIds.has(a.id)) || a.username.localeCompare(b.username));
  return (
    <aside class="members" aria-label="Members">
      <h2>Members</h2>
      <ul>
        {all.map((u) => (
          <li key={u.id}>
            <span class={`dot${onlineIds.has(u.id) ? ' on' : ''}`} aria-hidden="true" />
            <span class="name" title={u.username}>{u.username}</span>
            <span class="sr-only">{onlineIds.has(u.id) ? ' (online)' : ' (offline)'}</span>
            {u.id !== me.id && owner === me.id && room.kind !== 'dm' && (
              <button class="link" onClick={() => void act(client.removeMember(room.name, u.username), `${u.username} was removed`)}
                aria-label={`Remove ${u.username}`}>Remove</button>
            )}
            {u.id !== me.id && (
              <button class="link" onClick={() => void act(client.block(u.username), `${u.username} is blocked: they cannot open a DM with you or add you to rooms`)}
                aria-label={`Block ${u.username}`}>Block</button>
            )}
          </li>
        ))}
      </ul>
      {error && <p class="note" role="status">{error}</p>}
      {room.kind === 'private' && (
        <InlineForm label="Add a member" placeholder="username" action="Add"
          run={async (username) => { await client.addMember(room.name, username); setReload(reload + 1); }} />
      )}
    </aside>
  );
}

function Composer({ onSend, onTyping, onCancel, label, maxBytes, draftKey, seed, files }: {
  onSend: (text: string) => void; onTyping: () => void; onCancel?: () => void; label: string; maxBytes: number; draftKey: string;
  /** Text to put in the composer (a failed send being edited); a new object each time. */
  seed?: { text: string };
  /** Attaching files: where picked or pasted files go, whether some are ready (a message may
   * then go without text) or still uploading (it waits for them). Absent: no attaching. */
  files?: { onFiles: (files: File[]) => void; ready: boolean; uploading: boolean };
}) {
  const picker$ = useRef<HTMLInputElement>(null);
  // The draft of each room is kept (in this browser) until sent: switching rooms or reloading
  // loses nothing.
  const [text, setTextState] = useState(() => localStorage.getItem(draftKey) ?? '');
  const setText = (t: string) => {
    setTextState(t);
    if (t) localStorage.setItem(draftKey, t);
    else localStorage.removeItem(draftKey);
  };
  const lastTyping = useRef(0);
  const box = useRef<HTMLTextAreaElement>(null);
  const [picker, setPicker] = useState(false);
  /** Puts `emoji` where the cursor is, and the cursor after it. */
  const insert = (emoji: string) => {
    const el = box.current;
    const [from, to] = el ? [el.selectionStart, el.selectionEnd] : [text.length, text.length];
    setText(text.slice(0, from) + emoji + text.slice(to));
    setPicker(false);
    requestAnimationFrame(() => {
      el?.focus();
      el?.setSelectionRange(from + emoji.length, from + emoji.length);
    });
  };
  // Opening a room puts the cursor where one writes (with a mouse or keyboard; a touch
  // screen would pop its keyboard up over the messages).
  useEffect(() => {
    if (window.matchMedia('(pointer: fine)').matches) box.current?.focus();
  }, [draftKey]);
  // In the same frame as the failed send it comes from leaves the list (a layout effect).
  useLayoutEffect(() => {
    if (!seed) return;
    setText(seed.text);
    box.current?.focus();
  }, [seed]);
  // Counted as the server counts (UTF-8 bytes); a text over the limit is kept, never cut, and
  // cannot be sent until shortened.
  const notice = lengthNotice(utf8Bytes(text), maxBytes);
  const send = () => {
    if ((!text.trim() && !files?.ready) || notice.over || files?.uploading) return;
    onSend(text);
    setText('');
    // Receivers clear our typing indicator when the message arrives: the next keystroke
    // must announce typing again, however soon it comes.
    lastTyping.current = 0;
  };
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === 'Escape' && onCancel) {
      onCancel();
    }
  };
  const onInput = (e: Event) => {
    setText((e.currentTarget as HTMLTextAreaElement).value);
    const now = Date.now();
    if (now - lastTyping.current > 2000) {
      lastTyping.current = now;
      onTyping();
    }
  };
  return (
    <form class="composer" onSubmit={(e) => { e.preventDefault(); send(); }}>
      <textarea ref={box} aria-label={label} placeholder="Write a message (Enter sends, Shift+Enter for a new line)" rows={2}
        value={text} onKeyDown={onKeyDown} onInput={onInput} aria-invalid={notice.over}
        aria-describedby={notice.show ? 'composer-length' : undefined}
        onPaste={(e) => {
          const pasted = [...(e.clipboardData?.files ?? [])];
          if (!files || !pasted.length) return;
          e.preventDefault();
          files.onFiles(pasted);
        }} />
      {files && (
        <>
          <input ref={picker$} type="file" multiple hidden aria-label="Attach files"
            onChange={(e) => {
              const input = e.currentTarget;
              files.onFiles([...(input.files ?? [])]);
              input.value = '';
            }} />
          <button type="button" class="attach-button" aria-label="Attach files" title="Attach files (or drop them, or paste)"
            onClick={() => picker$.current?.click()}><PaperclipIcon /></button>
        </>
      )}
      <button type="button" class="emoji-button" aria-label="Insert emoji" aria-expanded={picker} onClick={() => setPicker(!picker)}>☺</button>
      <button class="primary" type="submit" disabled={notice.over || files?.uploading}>{files?.uploading ? 'Uploading…' : 'Send'}</button>
      {picker && <EmojiPicker label="Insert emoji" onPick={insert} onClose={() => { setPicker(false); box.current?.focus(); }} />}
      {notice.show && <p id="composer-length" class={`counter${notice.over ? ' over' : ''}`} role="status">{notice.text}</p>}
    </form>
  );
}

// ---- admin dashboard ----------------------------------------------------------------------

function duration(secs: number): string {
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${secs % 60}s`;
}

function notificationPermission(): NotificationPermission | 'unsupported' {
  return typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
}

const PERMISSION_TEXT: Record<NotificationPermission | 'unsupported', string> = {
  granted: 'On: messages that notify you show while this tab is hidden or the room is not open.',
  default: 'Off: this browser has not been allowed to show them.',
  denied: "Blocked: allow notifications for this site in the browser's settings.",
  unsupported: 'This browser cannot show them.',
};

/** The account: notifications and privacy; change the password (the other devices are signed
 * out), sign out everywhere, delete the account (with its password and a confirmation). */
function SettingsPane({ token, client, settings, onClose, onGone }: {
  token: string; client: ChatClient; settings?: Settings; onClose: () => void; onGone: () => void;
}) {
  const [note, setNote] = useState('');
  const [error, setError] = useState('');
  const [permission, setPermission] = useState(notificationPermission);
  const toggle = (patch: Partial<Settings>) => {
    setError(''); setNote('');
    void client.changeSettings(patch).catch((err: Error) => setError(err.message));
  };
  // The browser asks only on this click, never on its own.
  const enable = () => void Notification.requestPermission().then(() => {
    setPermission(notificationPermission());
    // Allowed: the server may now reach this browser while it is closed, too.
    return enablePush(token).catch(() => false);
  }, () => setPermission(notificationPermission()));
  const run = (work: () => Promise<void>, done: string) => async (e: Event) => {
    e.preventDefault();
    setError(''); setNote('');
    try { await work(); setNote(done); } catch (err) { setError(err instanceof Error ? err.message : 'failed'); }
  };
  const field = (form: EventTarget | null, name: string) =>
    ((form as HTMLFormElement).elements.namedItem(name) as HTMLInputElement).value;
  return (
    <section class="admin" aria-label="Settings">
      <header class="room-head">
        <button class="back" onClick={onClose} aria-label="Back to rooms">←</button>
        <h1>Settings</h1>
      </header>
      <div class="admin-body">
        {error && <p class="error" role="alert">{error}</p>}
        {note && <p class="note" role="status">{note}</p>}
        <h2>Notifications and privacy</h2>
        <div class="card" role="group" aria-label="Notifications and privacy">
          <label class="check">
            <input type="checkbox" checked={settings?.read_receipts ?? false} disabled={!settings}
              onChange={(e) => toggle({ read_receipts: e.currentTarget.checked })} />
            Send and show read receipts
          </label>
          <p class="hint">Others see how far you have read, and you see how far they have.</p>
          <label class="check">
            <input type="checkbox" checked={settings?.previews ?? false} disabled={!settings}
              onChange={(e) => toggle({ previews: e.currentTarget.checked })} />
            Show message previews in notifications
          </label>
          <p class="hint">Without previews a notification says who wrote, not what.</p>
          <p class="permission" role="status">Desktop notifications — {PERMISSION_TEXT[permission]}</p>
          {permission === 'default' && <button type="button" onClick={enable}>Enable desktop notifications</button>}
        </div>
        <h2>Change password</h2>
        <form class="card" aria-label="Change password" onSubmit={(e) => run(
          () => api.changePassword(token, field(e.currentTarget, 'current'), field(e.currentTarget, 'next')),
          'Password changed. Your other devices are signed out.')(e)}>
          <label>Current password <input name="current" type="password" autocomplete="current-password" required /></label>
          <label>New password <input name="next" type="password" autocomplete="new-password" minLength={8} required /></label>
          <button type="submit">Change password</button>
        </form>
        <h2>Sessions</h2>
        <button onClick={() => void api.logoutAll(token).then(onGone, (err: Error) => setError(err.message))}>Sign out everywhere</button>
        <h2>Delete account</h2>
        <form class="card" aria-label="Delete account" onSubmit={(e) => {
          const form = e.currentTarget;
          e.preventDefault();
          if (!confirm('Delete your account? You will be signed out everywhere and cannot sign in again. Your messages stay.')) return;
          void run(async () => { await api.deleteAccount(token, field(form, 'password')); onGone(); }, 'Account deleted.')(e);
        }}>
          <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
          <button type="submit" class="danger">Delete my account</button>
        </form>
      </div>
    </section>
  );
}

/** The cluster at a glance, refreshed every 2 s (admins only: the server refuses others). */
function AdminPane({ token, onClose }: { token: string; onClose: () => void }) {
  const [data, setData] = useState<Overview | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let live = true;
    const load = () => api.overview(token)
      .then((o) => { if (live) { setData(o); setError(''); } })
      .catch((e) => { if (live) setError(e instanceof Error ? e.message : 'failed'); });
    void load();
    const timer = setInterval(load, 2000);
    return () => { live = false; clearInterval(timer); };
  }, [token]);
  return (
    <section class="admin" aria-label="Admin dashboard">
      <header class="room-head">
        <button class="back" onClick={onClose} aria-label="Back to rooms">←</button>
        <h1>Admin dashboard</h1>
        {data && <span class="online-count">{data.messages_per_sec.toFixed(1)} messages/s</span>}
      </header>
      <div class="admin-body">
        {error && <p class="error" role="alert">{error}</p>}
        {data && (
          <>
            <h2>Nodes ({data.nodes.length})</h2>
            <table class="nodes">
              <thead><tr><th>node</th><th>uptime</th><th>connections</th><th>users</th><th>rooms</th><th>messages/s</th></tr></thead>
              <tbody>
                {data.nodes.map((n) => (
                  <tr key={n.node}>
                    <td title={n.node}>{n.node.slice(-8)}{n.node === data.node ? ' (this)' : ''}</td>
                    <td>{duration(n.uptime_secs)}</td><td>{n.connections}</td><td>{n.users}</td><td>{n.rooms}</td>
                    <td>{n.messages_per_sec.toFixed(1)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <h2>Busiest rooms (last 1–2 minutes)</h2>
            {data.busiest.length === 0 ? <p class="hint">No messages lately.</p> : (
              <table class="busiest">
                <thead><tr><th>room</th><th>messages</th></tr></thead>
                <tbody>{data.busiest.map((r) => <tr key={r.room}><td>#{r.room}</td><td>{r.messages}</td></tr>)}</tbody>
              </table>
            )}
            <h2>This node's dependencies</h2>
            <ul class="checks">
              {Object.entries(data.checks).map(([name, c]) => (
                <li key={name} data-ok={c.ok}>
                  <span class={`dot${c.ok ? ' on' : ''}`} aria-hidden="true" />
                  {name}: {c.ok ? 'ok' : `failing — ${c.error}`}
                </li>
              ))}
            </ul>
            <h2>Persisters (Kafka → PostgreSQL)</h2>
            {data.persisters.length === 0 ? <p class="hint">None running (durable mode is off, or no persister has reported in the last 15 s).</p> : (
              <table class="persisters">
                <thead><tr><th>persister</th><th>state</th><th>partitions</th><th>lag</th><th>written</th><th>dead letters</th><th>retries</th></tr></thead>
                <tbody>
                  {data.persisters.map((p) => (
                    <tr key={p.id} data-paused={p.paused}>
                      <td>{p.id}</td>
                      <td>{p.paused ? 'paused (database failing)' : 'running'}</td>
                      <td>{p.partitions.join(', ') || '—'}</td>
                      <td title={Object.entries(p.lag).map(([k, v]) => `partition ${k}: ${v}`).join('\n')}>
                        {Object.values(p.lag).reduce((a, b) => a + b, 0)}
                      </td>
                      <td>{p.persisted}</td><td>{p.dead_lettered}</td><td>{p.retries}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            <h2>Recent warnings and errors</h2>
            {data.errors.length === 0 ? <p class="hint">None since this node started.</p> : (
              <ul class="errors">
                {data.errors.map((e, i) => (
                  <li key={i}><time>{new Date(e.ts).toLocaleTimeString()}</time> <strong>{e.level}</strong> <code>{e.target}</code> {e.message}</li>
                ))}
              </ul>
            )}
          </>
        )}
      </div>
    </section>
  );
}
