// The Markdown a message may use, as a small tree the UI renders with elements of its own —
// never as HTML. `marked` (a maintained CommonMark/GFM parser) reads the text; only the
// subset below is kept: bold, italics, strike, inline code, code blocks, quotes, lists and
// links. Anything else (headings, tables, images, raw HTML…) is shown as the text that was
// written. The server stores the source text; this is display only.
import { Lexer, type Token, type Tokens } from 'marked';

export type Inline =
  | { t: 'text'; text: string }
  | { t: 'strong' | 'em' | 'del'; c: Inline[] }
  | { t: 'code'; text: string }
  | { t: 'link'; href: string; c: Inline[] };

export type Block =
  | { t: 'p'; c: Inline[] }
  | { t: 'code'; text: string }
  | { t: 'quote'; c: Block[] }
  | { t: 'list'; ordered: boolean; start?: number; items: Block[][] };

/** Links go to the web or to a mail address only (no `javascript:`, no `data:`). */
export function safeHref(href: string): string | undefined {
  try {
    const url = new URL(href);
    return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : undefined;
  } catch {
    return undefined;
  }
}

const lexer = () => new Lexer({ gfm: true, breaks: false });

function inline(tokens: Token[] | undefined, raw: string): Inline[] {
  if (!tokens) return [{ t: 'text', text: raw }];
  const out: Inline[] = [];
  const text = (s: string) => {
    const last = out.at(-1);
    if (last?.t === 'text') last.text += s;
    else out.push({ t: 'text', text: s });
  };
  for (const tok of tokens) {
    switch (tok.type) {
      case 'strong':
      case 'em':
      case 'del':
        out.push({ t: tok.type, c: inline((tok as Tokens.Strong).tokens, tok.raw) });
        break;
      case 'codespan':
        out.push({ t: 'code', text: (tok as Tokens.Codespan).text });
        break;
      case 'link': {
        const l = tok as Tokens.Link;
        const href = safeHref(l.href);
        if (href) out.push({ t: 'link', href, c: inline(l.tokens, l.text) });
        else text(l.raw);
        break;
      }
      case 'br':
        text('\n');
        break;
      case 'escape':
        text((tok as Tokens.Escape).text);
        break;
      case 'text': {
        const t = tok as Tokens.Text;
        if (t.tokens?.length) out.push(...inline(t.tokens, t.raw));
        else text(t.raw);
        break;
      }
      // Images, raw HTML and anything else: what was written, as text.
      default:
        text(tok.raw);
    }
  }
  return out;
}

function blocks(tokens: Token[]): Block[] {
  const out: Block[] = [];
  for (const tok of tokens) {
    switch (tok.type) {
      case 'space':
        break;
      case 'paragraph':
        out.push({ t: 'p', c: inline((tok as Tokens.Paragraph).tokens, tok.raw) });
        break;
      case 'text': {
        const t = tok as Tokens.Text;
        out.push({ t: 'p', c: inline(t.tokens, t.text) });
        break;
      }
      case 'code':
        out.push({ t: 'code', text: (tok as Tokens.Code).text });
        break;
      case 'blockquote':
        out.push({ t: 'quote', c: blocks((tok as Tokens.Blockquote).tokens) });
        break;
      case 'list': {
        const l = tok as Tokens.List;
        out.push({
          t: 'list',
          ordered: l.ordered,
          ...(l.ordered && typeof l.start === 'number' && l.start !== 1 ? { start: l.start } : {}),
          items: l.items.map((item) => blocks(item.tokens)),
        });
        break;
      }
      // Headings, tables, rules, raw HTML: the text as written.
      default:
        out.push({ t: 'p', c: [{ t: 'text', text: tok.raw.replace(/\n+$/, '') }] });
    }
  }
  return out;
}

/** The message text as blocks of the Markdown subset. */
export function parseMarkdown(text: string): Block[] {
  return blocks(lexer().lex(text));
}

/** A text with no Markdown in it parses to one paragraph of one text: shown as before. */
export function isPlain(b: Block[]): b is [{ t: 'p'; c: [{ t: 'text'; text: string }] }] {
  return b.length === 1 && b[0].t === 'p' && b[0].c.length === 1 && b[0].c[0].t === 'text';
}
