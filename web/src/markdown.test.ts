import { describe, expect, it } from 'vitest';
import { isPlain, parseMarkdown, safeHref } from './markdown';

describe('the Markdown subset', () => {
  it('keeps a plain text whole, its line breaks and spaces included', () => {
    for (const t of ['hello', 'line one\nline two', '  padded  ', 'x_y_z', 'a & b', '2 * 3 = 6']) {
      const tree = parseMarkdown(t);
      expect(isPlain(tree), t).toBe(true);
      expect(tree[0].t === 'p' && tree[0].c[0].t === 'text' && tree[0].c[0].text).toBe(t);
    }
  });

  it('reads bold, italics, strike, inline code and links', () => {
    expect(parseMarkdown('**b** _i_ ~~s~~ `c<d>` [site](https://example.com)')).toEqual([{ t: 'p', c: [
      { t: 'strong', c: [{ t: 'text', text: 'b' }] }, { t: 'text', text: ' ' },
      { t: 'em', c: [{ t: 'text', text: 'i' }] }, { t: 'text', text: ' ' },
      { t: 'del', c: [{ t: 'text', text: 's' }] }, { t: 'text', text: ' ' },
      { t: 'code', text: 'c<d>' }, { t: 'text', text: ' ' },
      { t: 'link', href: 'https://example.com/', c: [{ t: 'text', text: 'site' }] },
    ] }]);
  });

  it('reads code blocks, quotes and lists', () => {
    expect(parseMarkdown('```\nlet x = 1;\n```')).toEqual([{ t: 'code', text: 'let x = 1;' }]);
    expect(parseMarkdown('> quoted')).toEqual([{ t: 'quote', c: [{ t: 'p', c: [{ t: 'text', text: 'quoted' }] }] }]);
    const list = parseMarkdown('3. three\n4. four')[0];
    expect(list).toMatchObject({ t: 'list', ordered: true, start: 3 });
    expect(parseMarkdown('- a\n- b')[0]).toMatchObject({ t: 'list', ordered: false, items: [[{ t: 'p' }], [{ t: 'p' }]] });
  });

  it('shows raw HTML, images, headings and unsafe links as the text written', () => {
    for (const t of ['<img src=x onerror="alert(1)">', '<script>alert(2)</script>', '# not a heading here']) {
      expect(parseMarkdown(t)).toEqual([{ t: 'p', c: [{ t: 'text', text: t }] }]);
    }
    expect(parseMarkdown('a <b>b</b> ![i](https://x/y.png)')).toEqual([{ t: 'p', c: [{ t: 'text', text: 'a <b>b</b> ![i](https://x/y.png)' }] }]);
    expect(parseMarkdown('[x](javascript:alert(1))')).toEqual([{ t: 'p', c: [{ t: 'text', text: '[x](javascript:alert(1))' }] }]);
    expect([safeHref('mailto:a@b.c'), safeHref('data:text/html,x'), safeHref('nope')]).toEqual(['mailto:a@b.c', undefined, undefined]);
  });
});
