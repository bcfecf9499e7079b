import { describe, expect, it } from 'vitest';
import {
  addHistory, addMessages, dropSend, emptyRoom, groupMessages, hasGap, lengthNotice, placeOutgoing, linkify, markRead, mergeMessages,
  queueSend, readUpTo, restoreOutbox, retrySend, sendFailed, syncedThrough, toResend, unreadCount, utf8Bytes, type Message, type RoomView,
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
