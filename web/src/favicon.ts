// The tab's icon carries the unread count (as the title does): a background tab shows that
// something came even where titles are cut short. Drawn on a canvas into a data: URL (the page's
// CSP allows data: images).
import { badgeText } from './state';

/** The page's own icon, put back at zero. `null`: it had none. */
let plain: string | null | undefined;
let shown = '';

function iconLink(): HTMLLinkElement {
  let link = document.querySelector<HTMLLinkElement>('link[rel~="icon"]');
  if (!link) {
    link = document.createElement('link');
    link.rel = 'icon';
    document.head.append(link);
  }
  return link;
}

/** Shows `n` on the tab's icon; 0 restores the plain icon. */
export function showCountOnIcon(n: number) {
  const text = badgeText(n);
  if (text === shown) return;
  const link = iconLink();
  if (plain === undefined) plain = link.getAttribute('href');
  shown = text;
  if (!text) {
    if (plain === null) link.removeAttribute('href');
    else link.setAttribute('href', plain);
    return;
  }
  const size = 32;
  const canvas = document.createElement('canvas');
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  // A red disc with the count in white, legible at the 16 px a tab shows.
  ctx.fillStyle = '#c62828';
  ctx.beginPath();
  ctx.arc(size / 2, size / 2, size / 2, 0, 2 * Math.PI);
  ctx.fill();
  ctx.fillStyle = '#ffffff';
  ctx.font = `bold ${text.length === 1 ? 22 : text.length === 2 ? 18 : 13}px system-ui, sans-serif`;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText(text, size / 2, size / 2 + 1);
  link.setAttribute('href', canvas.toDataURL('image/png'));
}
