// Emoji by name: `:shortcode:`s shown as their emoji, and the picker's search. The table
// (GitHub's gemoji, ~1,900 emoji) is a chunk of its own, loaded the first time a message
// names one or the picker opens, so the page loads without it. The server stores what was
// written; shortcodes are turned into emoji for display only.

export interface EmojiEntry {
  emoji: string;
  names: string[];
  tags: string[];
  description: string;
  category: string;
}

export interface EmojiTable {
  byName: Map<string, string>;
  all: EmojiEntry[];
}

let loading: Promise<EmojiTable> | undefined;
let table: EmojiTable | undefined;

/** The table, once loaded (undefined before). */
export function emojiTable(): EmojiTable | undefined {
  return table;
}

export function loadEmoji(): Promise<EmojiTable> {
  loading ??= import('gemoji').then(({ gemoji }) => {
    table = tableOf(gemoji);
    return table;
  });
  return loading;
}

export function tableOf(list: EmojiEntry[]): EmojiTable {
  const byName = new Map<string, string>();
  for (const e of list) for (const n of e.names) byName.set(n, e.emoji);
  return { byName, all: list };
}

const SHORTCODE = /:([a-z0-9_+-]{1,40}):/g;

/** Whether `text` has something that may be a shortcode (worth loading the table for). */
export function mayHaveShortcodes(text: string): boolean {
  return /:[a-z0-9_+-]{1,40}:/.test(text);
}

/** `text` with each `:name:` the table knows replaced by its emoji; unknown names stay. */
export function expandShortcodes(text: string, byName: Map<string, string>): string {
  return text.replace(SHORTCODE, (whole, name: string) => byName.get(name) ?? whole);
}

/** Up to `limit` emoji whose names, tags or description contain every word of `query`;
 * names that start with it first. An empty query gives the first `limit`, in the table's
 * order (by category). */
export function searchEmoji(all: EmojiEntry[], query: string, limit = 120): EmojiEntry[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return all.slice(0, limit);
  const hits = all.filter((e) => {
    const hay = [...e.names, ...e.tags, e.description].join(' ').toLowerCase();
    return words.every((w) => hay.includes(w));
  });
  const starts = (e: EmojiEntry) => (e.names.some((n) => n.startsWith(words[0])) ? 0 : 1);
  return hits.sort((a, b) => starts(a) - starts(b)).slice(0, limit);
}
