import { describe, expect, it } from 'vitest';
import {
  addHistory, addMessages, atWindow, formatBytes, highlight, outboxOf, previewBox, addReceipt, badgeText, dropSend, emptyRoom, groupMessages, hasGap, isMention, lengthNotice, placeOutgoing, linkify, markRead,
  mentionCount, mentionsMe, mergeMessages, notificationOf, placeReceipts, queueSend, readUpTo, restoreOutbox, retrySend, richText, sendFailed,
  setReceipts, shouldNotify, shownMessages, toLatest, syncedThrough, toResend, unreadCount, utf8Bytes, type Message, type RoomView,
} from './state';

const ann = { id: 'A', username: 'ann' };
const bob = { id: 'B', username: 'bob' };
const msg = (seq: number, sender = bob, ts = 1_000_000 + seq * 1000, client_id = `c${seq}`): Message => ({
  id: `id${seq}`, room: 'r', seq, sender, text: `m${seq}`, client_id, ts,
});

describe('merging', () => {
  it('dedupes by id and keeps seq order whatever the arrival order', () => {
    const merged = mergeMessages([msg(1), msg(3)], [msg(2), msg(3), msg(1)]);
    expect(merged.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('returns the same array when nothing is new (no re-render)', () => {
    const list = [msg(1)];
    expect(mergeMessages(list, [msg(1)])).toBe(list);
  });

  it('tracks the contiguous seq and detects gaps', () => {
    let r = emptyRoom('r', 'public');
    r = addMessages(r, [msg(1), msg(2)]);
    expect([r.contiguous, hasGap(r)]).toEqual([2, false]);
    r = addMessages(r, [msg(5)]);
    expect([r.contiguous, r.lastSeq, hasGap(r)]).toEqual([2, 5, true]);
    r = addMessages(r, [msg(3), msg(4)]); // what sync returns
    expect([r.contiguous, hasGap(r)]).toEqual([5, false]);
  });

  it('a seq that a complete sync does not return never existed: the gap closes', () => {
    let r = addMessages(emptyRoom('r', 'public'), [msg(1), msg(2), msg(4)]);
    expect(hasGap(r)).toBe(true);
    r = addMessages(r, [msg(4)]); // sync after 2 returns only 4: seq 3 was never acked
    r = syncedThrough(r, 4);
    expect([r.contiguous, hasGap(r)]).toEqual([4, false]);
    expect(syncedThrough(r, 2)).toBe(r);
  });

  it('a room joined at last_seq 10 starts contiguous there; older pages come from history', () => {
    let r = emptyRoom('r', 'public', 10);
    expect(r.hasMore).toBe(true);
    r = addMessages(r, [msg(11)]);
    expect(r.contiguous).toBe(11);
    r = addHistory(r, [msg(9), msg(10)], true);
    expect(r.messages.map((m) => m.seq)).toEqual([9, 10, 11]);
    r = addHistory(r, [msg(1)], false);
    expect(r.hasMore).toBe(false);
  });
});

describe('sending', () => {
  it('pending → sent: the ack (or the echo) replaces the placeholder, shown once', () => {
    let r = queueSend(emptyRoom('r', 'public'), 'x1', 'hello', 5);
    expect(r.outgoing).toEqual([{ client_id: 'x1', text: 'hello', ts: 5, status: 'pending' }]);
    const echoed = msg(1, ann, 6, 'x1');
    r = addMessages(r, [echoed], 'A');
    expect(r.outgoing).toEqual([]);
    r = addMessages(r, [echoed], 'A'); // the ack after the live echo
    expect(r.messages).toHaveLength(1);
  });

  it('pending → failed → retried with the same client_id', () => {
    let r = queueSend(emptyRoom('r', 'public'), 'x1', 'hello');
    r = sendFailed(r, 'x1', 'rate_limited');
    expect(r.outgoing[0]).toMatchObject({ client_id: 'x1', status: 'failed', error: 'rate_limited' });
    r = retrySend(r, 'x1');
    expect(r.outgoing[0]).toMatchObject({ client_id: 'x1', status: 'pending' });
    expect(r.outgoing[0].error).toBeUndefined();
  });

  it('only failures that may pass later are sent again on reconnect, oldest first', () => {
    let r = emptyRoom('r', 'public');
    for (const id of ['lost', 'too-long', 'pending', 'shutdown']) r = queueSend(r, id, id);
    r = sendFailed(r, 'lost', 'The server did not answer in time.', true);
    r = sendFailed(r, 'too-long', 'text is too long', false);
    r = sendFailed(r, 'shutdown', 'server is shutting down', true);
    expect(toResend(r).map((o) => o.client_id)).toEqual(['lost', 'shutdown']);
    r = retrySend(r, 'lost');
    expect(toResend(r).map((o) => o.client_id)).toEqual(['shutdown']);
  });

  it("someone else's message with the same client_id does not clear ours", () => {
    let r = queueSend(emptyRoom('r', 'public'), 'c1', 'mine');
    r = addMessages(r, [msg(1, bob, 1, 'c1')], 'A');
    expect(r.outgoing).toHaveLength(1);
  });
});

describe('unread', () => {
  it('counts messages after lastRead sent by others, including ones not loaded yet', () => {
    let r = emptyRoom('r', 'public', 10, 7); // 3 unseen, none loaded
    expect(unreadCount(r, 'A')).toBe(3);
    r = addMessages(r, [msg(11, ann), msg(12, bob)], 'A');
    expect(unreadCount(r, 'A')).toBe(4); // 8, 9, 10 (unknown senders) and 12; 11 is ours
    r = markRead(r);
    expect(unreadCount(r, 'A')).toBe(0);
  });

  it('lastRead never exceeds the room (a reset server) and never goes negative', () => {
    const r = emptyRoom('r', 'public', 2, 9);
    expect(unreadCount(r, 'A')).toBe(0);
  });
});

describe('read state from the server', () => {
  it("the server's count holds while the marker stays where it counted; others' later messages add to it", () => {
    // The server counted 2 of others' messages after seq 5 of 9 (the rest were ours, not loaded).
    let r: RoomView = { ...emptyRoom('r', 'public', 9, 5), counted: { lastRead: 5, lastSeq: 9, unread: 2 } };
    expect(unreadCount(r, 'A')).toBe(2);
    r = addMessages(r, [msg(10), msg(11, ann)], 'A');
    expect(unreadCount(r, 'A')).toBe(3);
    // Read further (here or on another device): counted from the loaded messages again.
    r = readUpTo(r, 10);
    expect(unreadCount(r, 'A')).toBe(0);
  });

  it('a marker only moves forward; a count comes along only where the marker is', () => {
    const r = emptyRoom('r', 'public', 9, 5);
    expect(readUpTo(r, 3)).toBe(r);
    expect(readUpTo(r, 7).lastRead).toBe(7);
    // The server counted at 5, but this page has read to 7 already: its count is stale here.
    const ahead = readUpTo(r, 7);
    expect(readUpTo(ahead, 5, { lastRead: 5, lastSeq: 9, unread: 4 }).counted).toBeUndefined();
    expect(unreadCount(readUpTo(r, 5, { lastRead: 5, lastSeq: 9, unread: 4 }), 'A')).toBe(4);
  });

  it('a capped count (100: "100 or more") is not exceeded by what the room can hold', () => {
    const r = { ...emptyRoom('r', 'public', 40, 0), counted: { lastRead: 0, lastSeq: 40, unread: 100 } };
    expect(unreadCount(r, 'A')).toBe(40);
  });
});

describe('display', () => {
  it('groups consecutive messages of one sender on one day, within 5 minutes', () => {
    const day = (ts: number) => (ts < 2_000_000 ? 'd1' : 'd2');
    const groups = groupMessages([
      msg(1, bob, 1_000_000), msg(2, bob, 1_060_000), msg(3, ann, 1_070_000),
      msg(4, ann, 1_070_000 + 6 * 60_000), msg(5, ann, 2_000_000),
    ], day);
    expect(groups.map((g) => [g.sender.username, g.day, g.messages.map((m) => m.seq)])).toEqual([
      ['bob', 'd1', [1, 2]], ['ann', 'd1', [3]], ['ann', 'd1', [4]], ['ann', 'd2', [5]],
    ]);
  });

  it('finds http(s) links and leaves everything else as text', () => {
    expect(linkify('see https://example.com/a?b=1. and <b>x</b>')).toEqual([
      { text: 'see ' }, { href: 'https://example.com/a?b=1', text: 'https://example.com/a?b=1' },
      { text: '. and <b>x</b>' },
    ]);
    expect(linkify('javascript:alert(1)')).toEqual([{ text: 'javascript:alert(1)' }]);
    expect(linkify('')).toEqual([]);
  });
});

describe('the composer counts bytes as the server does', () => {
  it('counts UTF-8 bytes, not characters', () => {
    expect(utf8Bytes('abc')).toBe(3);
    expect(utf8Bytes('é')).toBe(2);
    expect(utf8Bytes('🦀')).toBe(4);
  });
  it('says nothing far from the limit, counts near it, and refuses past it without cutting', () => {
    expect(lengthNotice(100, 4096)).toMatchObject({ show: false, over: false });
    expect(lengthNotice(3300, 4096)).toMatchObject({ show: true, over: false, text: '3,300 / 4,096 bytes' });
    expect(lengthNotice(4096, 4096).over).toBe(false);
    const over = lengthNotice(5000, 4096);
    expect(over).toMatchObject({ show: true, over: true });
    expect(over.text).toContain('shorten it by 904');
  });
});

describe('unsent messages outlive the page', () => {
  it('a send still waiting when the page closed is made again by the next page; a refused one stays refused', () => {
    let room = queueSend(emptyRoom('r', 'public', 0, 0), 'c1', 'waiting', 1);
    room = queueSend(room, 'c2', 'refused', 2);
    room = sendFailed(room, 'c2', 'too long', false);
    const restored = { ...room, outgoing: restoreOutbox(JSON.parse(JSON.stringify(room.outgoing))) };
    expect(toResend(restored).map((o) => o.client_id)).toEqual(['c1']);
    expect(restored.outgoing.find((o) => o.client_id === 'c2')).toMatchObject({ status: 'failed', retryable: false, error: 'too long' });
    expect(dropSend(restored, 'c2').outgoing.map((o) => o.client_id)).toEqual(['c1']);
  });
});

describe('where our unacknowledged sends show', () => {
  it('a failed send stays where it was written; a pending one is at the end', () => {
    const m = (id: string, seq: number, ts: number, sender = bob) => ({ id, room: 'r', seq, sender, text: id, client_id: id, ts });
    const groups = groupMessages([m('a', 1, 1_000), m('b', 2, 10 * 60_000, ann)]);
    expect(groups.length).toBe(2);
    const failed = { client_id: 'f', text: 'f', ts: 5 * 60_000, status: 'failed' as const, retryable: false };
    const pending = { client_id: 'p', text: 'p', ts: 1, status: 'pending' as const };
    const late = { client_id: 'l', text: 'l', ts: 20 * 60_000, status: 'failed' as const };
    const { before, end } = placeOutgoing(groups, [failed, pending, late]);
    expect(before.map((b) => b.map((o) => o.client_id))).toEqual([[], ['f']]);
    expect(end.map((o) => o.client_id)).toEqual(['p', 'l']);
  });
});

describe('room addresses', () => {
  it('parses and builds /r/<room>, /dm/<username> and #<seq>', async () => {
    const { parseRoute, roomPath } = await import('./route');
    expect(parseRoute('/r/general')).toEqual({ kind: 'room', name: 'general', seq: undefined });
    expect(parseRoute('/r/general', '#42')).toEqual({ kind: 'room', name: 'general', seq: 42 });
    expect(parseRoute('/dm/alice/', '#x')).toEqual({ kind: 'dm', username: 'alice', seq: undefined });
    expect(parseRoute('/')).toEqual({ kind: 'home' });
    expect(parseRoute('/r/%E0%A4%A')).toEqual({ kind: 'home' });
    expect(parseRoute('/r/a/b')).toEqual({ kind: 'home' });
    expect(roomPath({ name: 'general', kind: 'public' })).toBe('/r/general');
    expect(roomPath({ name: 'dm-x-y', kind: 'dm' }, 'alice')).toBe('/dm/alice');
  });
});

describe('avatars', () => {
  it('initials from the name, a colour that stays with the user', async () => {
    const { avatarOf } = await import('./state');
    expect(avatarOf({ id: 'A1', username: 'ann' }).initials).toBe('AN');
    expect(avatarOf({ id: 'A1', username: 'ann_lee' }).initials).toBe('AL');
    expect(avatarOf({ id: 'A1', username: 'ann' }).colour).toBe(avatarOf({ id: 'A1', username: 'renamed' }).colour);
    const colours = new Set(Array.from({ length: 50 }, (_, i) => avatarOf({ id: `U${i}`, username: 'x' }).colour));
    expect(colours.size).toBeGreaterThan(4);
  });
});

const cat = { id: 'C', username: 'cat' };
/** A message of `sender` mentioning the given user ids (and the room). */
const said = (seq: number, sender: typeof ann, mentions: string[] = [], mention_room?: boolean): Message => ({
  ...msg(seq, sender), mentions, ...(mention_room ? { mention_room } : {}),
});

describe('mentions', () => {
  it('a message mentions us by id or through @room; our own never does', () => {
    expect(mentionsMe(said(1, bob, ['A']), 'A')).toBe(true);
    expect(mentionsMe(said(1, bob, ['C']), 'A')).toBe(false);
    expect(mentionsMe(said(1, bob, [], true), 'A')).toBe(true);
    expect(mentionsMe(said(1, ann, ['A'], true), 'A')).toBe(false);
    expect(mentionsMe(msg(1), 'A')).toBe(false); // data without the field
    // In a DM every message of the other user counts as one.
    expect(isMention({ kind: 'dm' }, said(1, bob), 'A')).toBe(true);
    expect(isMention({ kind: 'dm' }, said(1, ann), 'A')).toBe(false);
    expect(isMention({ kind: 'public' }, said(1, bob), 'A')).toBe(false);
  });

  it("the server's mention count holds at its marker; mentions that arrive add to it; reading clears it", () => {
    let r: RoomView = { ...emptyRoom('r', 'public', 9, 5), counted: { lastRead: 5, lastSeq: 9, unread: 3, mentions: 2 } };
    expect(mentionCount(r, 'A')).toBe(2);
    r = addMessages(r, [said(10, bob), said(11, cat, ['A']), said(12, bob, [], true), said(13, ann, ['A'])], 'A');
    expect([unreadCount(r, 'A'), mentionCount(r, 'A')]).toEqual([6, 4]);
    r = markRead(r);
    expect(mentionCount(r, 'A')).toBe(0);
  });

  it('after the marker moves where the server did not count, the loaded mentions after it count', () => {
    let r = addMessages(emptyRoom('r', 'public', 0, 0), [said(1, bob, ['A']), said(2, bob), said(3, cat, ['A'])], 'A');
    r = { ...r, counted: { lastRead: 0, lastSeq: 0, unread: 0, mentions: 0 } };
    r = readUpTo(r, 1);
    expect(mentionCount(r, 'A')).toBe(1);
    // Never more than the unread messages (a capped server count).
    const capped = { ...emptyRoom('r', 'public', 3, 0), counted: { lastRead: 0, lastSeq: 3, unread: 3, mentions: 100 } };
    expect(mentionCount(capped, 'A')).toBe(3);
  });

  it('finds @names as the server does and leaves everything else as text', () => {
    expect(richText('hi @Bob, and @cat.')).toEqual([
      { text: 'hi ' }, { mention: 'bob', text: '@Bob' }, { text: ', and ' }, { mention: 'cat', text: '@cat' }, { text: '.' },
    ]);
    expect(richText('mail ann@example.org or x_@bob or é@bob')).toEqual([{ text: 'mail ann@example.org or x_@bob or é@bob' }]);
    expect(richText('@room read this')).toEqual([{ mention: 'room', text: '@room' }, { text: ' read this' }]);
    // Too short for a username; and an @ inside a link stays in the link.
    expect(richText('@x @ https://example.com/@bob')).toEqual([{ text: '@x @ ' }, { href: 'https://example.com/@bob', text: 'https://example.com/@bob' }]);
    expect(richText('(@a.b.c)')).toEqual([{ text: '(' }, { mention: 'a.b.c', text: '@a.b.c' }, { text: ')' }]);
  });
});

describe('notifications', () => {
  const room = (level?: RoomView['level'], kind: RoomView['kind'] = 'public'): RoomView => ({ ...emptyRoom('r', kind, 10, 10), level });
  const away = { seen: false };

  it('follow the level: all, mentions (every DM message), none', () => {
    expect(shouldNotify(room(), said(11, bob), 'A', away)).toBe(true);
    expect(shouldNotify(room('all'), said(11, bob), 'A', away)).toBe(true);
    expect(shouldNotify(room('mentions'), said(11, bob), 'A', away)).toBe(false);
    expect(shouldNotify(room('mentions'), said(11, bob, ['A']), 'A', away)).toBe(true);
    expect(shouldNotify(room('mentions'), said(11, bob, [], true), 'A', away)).toBe(true);
    expect(shouldNotify(room('mentions', 'dm'), said(11, bob), 'A', away)).toBe(true);
    expect(shouldNotify(room('none'), said(11, bob, ['A']), 'A', away)).toBe(false);
    expect(shouldNotify(room('none', 'dm'), said(11, bob), 'A', away)).toBe(false);
  });

  it('never for our own messages, a room in view, what is read, or what came before the page', () => {
    expect(shouldNotify(room(), said(11, ann), 'A', away)).toBe(false);
    expect(shouldNotify(room(), said(11, bob), 'A', { seen: true })).toBe(false);
    expect(shouldNotify(room(), said(10, bob), 'A', away)).toBe(false); // read (on another device)
    const behind = { ...emptyRoom('r', 'public', 10, 2) };
    expect(shouldNotify(behind, said(5, bob), 'A', { seen: false, after: 10 })).toBe(false);
    expect(shouldNotify(behind, said(11, bob), 'A', { seen: false, after: 10 })).toBe(true);
  });

  it('say who wrote where, and quote the text only with previews on', () => {
    const m = { ...said(3, bob), text: 'lunch?' };
    expect(notificationOf(m, 'public', true)).toEqual({ title: 'bob in #r', body: 'lunch?' });
    expect(notificationOf(m, 'dm', true)).toEqual({ title: 'bob', body: 'lunch?' });
    expect(notificationOf(m, 'dm', false)).toEqual({ title: 'bob', body: 'New message' });
    const long = notificationOf({ ...m, text: '€'.repeat(500) }, 'dm', true).body;
    expect([...long].length).toBe(200);
    expect(long.endsWith('…')).toBe(true);
  });

  it('the icon counts up to 99, then 99+', () => {
    expect([badgeText(0), badgeText(7), badgeText(99), badgeText(100)]).toEqual(['', '7', '99', '99+']);
  });
});

describe('read receipts', () => {
  const loaded = addMessages(emptyRoom('r', 'private'), [msg(3), msg(4), msg(6), msg(7)]);

  it('a join gives the list as it stands; receipt events only move forward', () => {
    let r = setReceipts(loaded, [{ user: bob, seq: 4 }, { user: cat, seq: 6 }]);
    r = addReceipt(r, { user: bob, seq: 7 });
    expect(addReceipt(r, { user: cat, seq: 5 })).toBe(r);
    expect(r.receipts?.B.seq).toBe(7);
    // A member who turned receipts off is missing from the next join's list.
    expect(setReceipts(r, [{ user: cat, seq: 6 }]).receipts).toEqual({ C: { user: cat, seq: 6 } });
  });

  it('show under the last loaded message each member has read; not ours, not below what is loaded', () => {
    const r = setReceipts(loaded, [
      { user: bob, seq: 5 }, { user: cat, seq: 5 }, { user: { id: 'D', username: 'abe' }, seq: 99 },
      { user: ann, seq: 7 }, { user: { id: 'E', username: 'eve' }, seq: 2 },
    ]);
    const at = placeReceipts(r, 'A');
    expect([...at.keys()].sort()).toEqual([4, 7]);
    expect(at.get(4)?.map((u) => u.username)).toEqual(['bob', 'cat']);
    expect(at.get(7)?.map((u) => u.username)).toEqual(['abe']);
    expect(placeReceipts(emptyRoom('r', 'dm'), 'A').size).toBe(0);
  });
});

describe('changes to messages (edit, delete, reactions)', () => {
  const change = (seq: number, kind: Message['kind'], target: Message, text = '', sender = ann): Message => ({
    ...msg(seq, sender), kind, text, relates_to: target.id, relates_seq: target.seq,
  });
  const first = { ...msg(1, ann), kind: 'message' as const };

  it('a live change applies to its message; the timeline shows messages only', () => {
    let r = addMessages(emptyRoom('r', 'public'), [first], 'A');
    r = addMessages(r, [change(2, 'edit', first, 'fixed')], 'A');
    r = addMessages(r, [change(3, 'reaction', first, '👍', bob)], 'A');
    r = addMessages(r, [change(4, 'reaction', first, '👍', ann)], 'A');
    const now = r.messages[0];
    expect([now.text, now.edited_at !== undefined, now.reactions]).toEqual(['fixed', true, { '👍': { count: 2, me: true } }]);
    expect([r.contiguous, hasGap(r)]).toEqual([4, false]);
    expect(groupMessages(r.messages).flatMap((g) => g.messages.map((m) => m.seq))).toEqual([1]);
    r = addMessages(r, [change(5, 'unreaction', first, '👍', ann), change(6, 'delete', first)], 'A');
    expect([r.messages[0].text, r.messages[0].deleted, r.messages[0].reactions]).toEqual(['', true, undefined]);
  });

  it('an edit by someone else, or after the deletion, changes nothing; the same change arriving twice applies once', () => {
    let r = addMessages(emptyRoom('r', 'public'), [first], 'A');
    r = addMessages(r, [change(2, 'edit', first, 'hijack', bob)], 'A');
    expect(r.messages[0].text).toBe('m1');
    const react = change(3, 'reaction', first, '🎉', bob);
    r = addMessages(r, [react], 'A');
    r = addMessages(r, [react], 'A');
    expect(r.messages[0].reactions).toEqual({ '🎉': { count: 1, me: false } });
  });

  it('a bundled answer replaces the message and is not counted again by the changes it brings along', () => {
    let r = addMessages(emptyRoom('r', 'public'), [first], 'A');
    const bundled = { ...first, text: 'fixed', edited_at: 5, reactions: { '👍': { count: 1, me: false } } };
    r = addHistory(r, [bundled, change(2, 'edit', first, 'fixed'), change(3, 'reaction', first, '👍', bob)], false, 'A');
    expect(r.messages[0].reactions).toEqual({ '👍': { count: 1, me: false } });
    expect(r.messages[0].text).toBe('fixed');
  });

  it('changes are neither unread nor mentions nor notified', () => {
    let r = addMessages(emptyRoom('r', 'dm'), [msg(1, bob)], 'A');
    r = markRead(r);
    r = addMessages(r, [change(2, 'reaction', msg(1, bob), '👍', bob), change(3, 'edit', msg(1, bob), 'x', bob)], 'A');
    expect([unreadCount(r, 'A'), mentionCount(r, 'A')]).toEqual([0, 0]);
    expect(shouldNotify(r, change(3, 'edit', msg(1, bob), 'x', bob), 'A', { seen: false })).toBe(false);
  });
});

describe('replies', () => {
  it('a reply quotes its message as it stands: an edit or a deletion that arrives live updates the quote', () => {
    const first: Message = { ...msg(1, ann), kind: 'message', text: 'old\nsecond line' };
    const reply: Message = { ...msg(2, bob), kind: 'message', reply_to: { id: first.id, seq: 1, sender: ann, text: 'old' } };
    let r = addMessages(emptyRoom('r', 'public'), [first, reply], 'B');
    const edit: Message = { ...msg(3, ann), kind: 'edit', text: '  \nnew first line\nmore', relates_to: first.id, relates_seq: 1 };
    r = addMessages(r, [edit], 'B');
    expect(r.messages[1].reply_to).toEqual({ id: first.id, seq: 1, sender: ann, text: 'new first line' });
    const del: Message = { ...msg(4, ann), kind: 'delete', text: '', relates_to: first.id, relates_seq: 1 };
    r = addMessages(r, [del], 'B');
    expect(r.messages[1].reply_to).toEqual({ id: first.id, seq: 1, sender: ann, text: '', deleted: true });
  });
});

describe('search results', () => {
  it('marks whole words of the query in a fragment, in any case', () => {
    expect(highlight('…the Rocket launched; rocketry next', ['rocket'])).toEqual([
      { text: '…the ', mark: false },
      { text: 'Rocket', mark: true },
      { text: ' launched; rocketry next', mark: false },
    ]);
    expect(highlight('nothing here', ['x'])).toEqual([{ text: 'nothing here', mark: false }]);
  });
});

describe('attachments', () => {
  it('sizes read as file managers show them', () => {
    expect([0, 512, 1536, 10 * 1024, 1024 * 1024, 10.5 * 1024 * 1024, 3 * 1024 ** 3].map(formatBytes))
      .toEqual(['0 B', '512 B', '1.5 KB', '10 KB', '1 MB', '11 MB', '3 GB']);
  });

  it('a preview fits 320 × 320 and keeps the picture\'s shape; a file without dimensions has none', () => {
    const file = { id: 'f', name: 'a.png', size: 1, content_type: 'image/png' };
    expect(previewBox({ ...file, width: 600, height: 400 })).toEqual({ width: 320, height: 213 });
    expect(previewBox({ ...file, width: 100, height: 1000 })).toEqual({ width: 32, height: 320 });
    expect(previewBox({ ...file, width: 40, height: 30 })).toEqual({ width: 40, height: 30 });
    expect(previewBox(file)).toBeUndefined();
  });

  it('a queued send keeps its file, so a retry or a resend after a reload carries it', () => {
    const file = { id: 'f', name: 'a.txt', size: 3, content_type: 'text/plain' };
    const room = queueSend(emptyRoom('r', 'public'), 'c1', '', 1, undefined, file);
    const failed = sendFailed(room, 'c1', 'timeout', true);
    const restored = restoreOutbox(JSON.parse(JSON.stringify(outboxOf(failed))));
    expect(toResend({ ...failed, outgoing: restored })[0].attachment).toEqual(file);
  });
});

describe('a window of the log', () => {
  it('shows an older stretch alone, keeps the newer messages for later, and marks nothing read meanwhile', () => {
    const newest = Array.from({ length: 50 }, (_, i) => msg(2951 + i));
    let room = addHistory({ ...emptyRoom('r', 'public', 3000, 2900) }, newest, true);
    const page = Array.from({ length: 50 }, (_, i) => msg(976 + i));
    room = atWindow(room, page, true);
    expect(room.windowEnd).toBe(1025);
    expect(shownMessages(room).map((m) => m.seq)).toEqual(page.map((m) => m.seq));
    expect(room.messages.length).toBe(100);
    expect(room.contiguous).toBe(3000);
    expect(markRead(room).lastRead).toBe(2900);
    // A live message arrives: counted, kept, not shown in the window.
    room = addMessages(room, [msg(3001)]);
    expect(room.lastSeq).toBe(3001);
    expect(shownMessages(room).at(-1)?.seq).toBe(1025);
    // Back to the newest: the window goes, what was newer stays, reading marks again.
    room = toLatest(room);
    expect(room.windowEnd).toBeUndefined();
    expect(room.messages.map((m) => m.seq)).toEqual([...newest.map((m) => m.seq), 3001]);
    expect(room.hasMore).toBe(true);
    expect(markRead(room).lastRead).toBe(3001);
  });
});
