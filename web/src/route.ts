/**
 * Each room has its own address: `/r/<room>` for a room, `/dm/<username>` for a DM, and
 * `#<seq>` after either points at one message. Back and Forward move between rooms, a reload
 * reopens the room, and a link to a message scrolls to it.
 */

export type Route =
  | { kind: 'home' }
  | { kind: 'room'; name: string; seq?: number }
  | { kind: 'dm'; username: string; seq?: number };

function seqOf(hash: string): number | undefined {
  const n = Number(hash.replace(/^#/, ''));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

export function parseRoute(pathname: string, hash = ''): Route {
  const m = /^\/(r|dm)\/([^/]+)\/?$/.exec(pathname);
  if (!m) return { kind: 'home' };
  let part: string;
  try {
    part = decodeURIComponent(m[2]);
  } catch {
    return { kind: 'home' };
  }
  const seq = seqOf(hash);
  return m[1] === 'r' ? { kind: 'room', name: part, seq } : { kind: 'dm', username: part, seq };
}

/** The address of a room (a DM's is its other user's name, when known). */
export function roomPath(room: { name: string; kind: string }, peer?: string): string {
  if (room.kind === 'dm') return peer ? `/dm/${encodeURIComponent(peer)}` : '/';
  return `/r/${encodeURIComponent(room.name)}`;
}
