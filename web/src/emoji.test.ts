import { describe, expect, it } from 'vitest';
import { gemoji } from 'gemoji';
import { expandShortcodes, mayHaveShortcodes, searchEmoji, tableOf } from './emoji';

describe('emoji by name', () => {
  const table = tableOf(gemoji);

  it('shows known shortcodes as their emoji and leaves anything else as written', () => {
    expect(expandShortcodes('ship it :rocket: :+1: :no_such_emoji: 10:30:45', table.byName)).toBe('ship it 🚀 👍 :no_such_emoji: 10:30:45');
    expect([mayHaveShortcodes('a :tada: b'), mayHaveShortcodes('at 10:30')]).toEqual([true, false]);
  });

  it('finds emoji by name, tag or description, names that start with the word first', () => {
    expect(searchEmoji(table.all, 'rocket')[0].emoji).toBe('🚀');
    expect(searchEmoji(table.all, 'thumbs up').map((e) => e.emoji)).toContain('👍');
    expect(searchEmoji(table.all, 'zzzz-nothing')).toEqual([]);
    expect(searchEmoji(table.all, '', 10)).toHaveLength(10);
  });
});
