// The log-replay rules of docs/protocol.md ("Edits, deletions and reactions"), written from
// the document, as the oracle the tests compare the server's bundled history with.

/**
 * The log-replay rules of docs/protocol.md, written from the document: what a client that
 * replays `sync` reaches, for `reader`.
 */
export function replay(entries, reader) {
  const bySeq = new Map();
  const reactions = new Map();
  for (const e of entries) {
    const kind = e.kind ?? 'message';
    if (kind === 'message') {
      bySeq.set(e.seq, { ...e });
      continue;
    }
    const target = bySeq.get(e.relates_seq);
    if (!target || target.id !== e.relates_to) continue;
    if (kind === 'edit' && !target.deleted && target.sender.id === e.sender.id) {
      target.text = e.text;
      target.edited_at = e.ts;
    } else if (kind === 'delete' && !target.deleted) {
      target.text = '';
      target.deleted = true;
      reactions.delete(target.seq);
    } else if (kind === 'reaction' && !target.deleted) {
      const m = reactions.get(target.seq) ?? new Map();
      reactions.set(target.seq, m);
      (m.get(e.text) ?? m.set(e.text, new Set()).get(e.text)).add(e.sender.id);
    } else if (kind === 'unreaction') {
      const users = reactions.get(target.seq)?.get(e.text);
      users?.delete(e.sender.id);
      if (users?.size === 0) reactions.get(target.seq).delete(e.text);
    }
  }
  return [...bySeq.values()].map((m) => {
    const r = reactions.get(m.seq);
    const counted = r && r.size ? Object.fromEntries([...r].map(([emoji, users]) => [emoji, { count: users.size, me: users.has(reader) }])) : undefined;
    return { id: m.id, seq: m.seq, text: m.text, deleted: !!m.deleted, edited: m.edited_at !== undefined, reactions: counted };
  });
}

/** What history bundles, in the shape `replay` returns (messages only). */
export const bundled = (messages) => messages.filter((m) => m.kind === 'message').map((m) => ({
  id: m.id, seq: m.seq, text: m.text, deleted: !!m.deleted, edited: m.edited_at !== undefined, reactions: m.reactions,
}));

