// Small helpers shared by every module: DOM building, time formatting, ids.
//
// `h()` is the only way the UI builds elements. It never sets `style` or
// `innerHTML` (the page runs under a CSP without 'unsafe-inline', and message
// bodies reach innerHTML only through markdown.js).

/** Create an element: h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (key === 'style' || key === 'innerHTML') throw new Error(`h(): ${key} is not allowed`);
      if (key.startsWith('aria-') && typeof value === 'boolean') {
        el.setAttribute(key, String(value));
        continue;
      }
      if (value == null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key.includes('-')) el.setAttribute(key, String(value));
      else if (typeof value === 'boolean') {
        if (key in el) el[key] = value;
        else el.setAttribute(key, '');
      } else if (key in el && typeof value !== 'string') el[key] = value;
      else el.setAttribute(key, value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Remove every child of an element. */
export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** A random id usable as `client_msg_id` (letters, digits and dashes). */
export function uid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** UTF-8 length of a string, as the server counts body sizes. */
export function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const dayYearFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'long' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

export function parseTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? new Date() : d;
}

/** "10:42 AM" */
export function formatTime(iso) {
  return timeFmt.format(parseTime(iso));
}

/** "Friday, November 28, 2026 at 10:42 AM" (for titles). */
export function formatFull(iso) {
  return fullFmt.format(parseTime(iso));
}

/** Local calendar day key: "2026-11-28". */
export function dayKey(iso) {
  const d = parseTime(iso);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

function startOfDay(d) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** "Today", "Yesterday", "Monday, November 24" or "November 24, 2025". */
export function formatDay(iso, now = new Date()) {
  const d = parseTime(iso);
  const days = Math.round((startOfDay(now) - startOfDay(d)) / 86400000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return d.getFullYear() === now.getFullYear() ? dayFmt.format(d) : dayYearFmt.format(d);
}

/** Compact "last activity": "now", "5m", "3h", "Tue", "Nov 3". */
export function formatAgo(iso, now = new Date()) {
  const d = parseTime(iso);
  const s = (now.getTime() - d.getTime()) / 1000;
  if (s < 60) return 'now';
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (startOfDay(now) === startOfDay(d)) return `${Math.floor(s / 3600)}h`;
  if (s < 6 * 86400) return weekdayFmt.format(d);
  return shortDateFmt.format(d);
}

/** A stable small integer for a string (avatar colours). */
export function hashIndex(text, n) {
  let x = 0;
  for (let i = 0; i < text.length; i++) x = (x * 31 + text.charCodeAt(i)) >>> 0;
  return x % n;
}

/** Up to two initials of a display name. */
export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const chars = parts.slice(0, 2).map((p) => Array.from(p)[0] || '');
  return (chars.join('') || '?').toUpperCase();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Run async tasks with at most `limit` at a time. */
export function limiter(limit) {
  let active = 0;
  const queue = [];
  const next = () => {
    if (active >= limit || !queue.length) return;
    active++;
    const { fn, resolve, reject } = queue.shift();
    Promise.resolve()
      .then(fn)
      .then(resolve, reject)
      .finally(() => {
        active--;
        next();
      });
  };
  return (fn) =>
    new Promise((resolve, reject) => {
      queue.push({ fn, resolve, reject });
      next();
    });
}
