// An escaping-first renderer for the small Markdown subset Parley displays.
//
// Safety argument (keep it true when changing this file):
//   1. Every character of the message reaches the output through escapeHtml(),
//      so the text can never open a tag, an attribute or an entity of its own.
//   2. The only markup in the output is produced here, from a fixed list of tags
//      (p, br, strong, em, del, code, pre, blockquote, a, and span with the class
//      "mention" or "mention me"), never from the input.
//   3. The only attribute that carries input is a link's href, and only after
//      safeUrl() accepted it (http, https, mailto) and escapeHtml() quoted it.
//   4. Inline passes run on already-escaped text, and each later pass refuses to
//      span a '<', so the tags they add always nest properly.
// No DOM is needed: the output is a string for innerHTML, and node can test it.
//
// Supported: **strong**, *em*, _em_, ~~strike~~, `code`, ```code blocks```,
// > quotes, [text](url), bare http(s) URLs, line breaks; and the mentions the
// server found (`mentions` option), outside code as the server parses them.

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const MAX_QUOTE_DEPTH = 3;
// Bounded lengths keep every regex linear-ish on hostile 16 KiB bodies.
const MAX_SPAN = 500;

/** Escape the five HTML-significant characters. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** The URL if it is an absolute http, https or mailto URL, else null. */
export function safeUrl(raw) {
  const url = String(raw).trim();
  if (!/^(?:https?:\/\/|mailto:)[^\s\u0000-\u001f\u007f]+$/i.test(url)) return null;
  try {
    const parsed = new URL(url);
    if (!['http:', 'https:', 'mailto:'].includes(parsed.protocol)) return null;
  } catch {
    return null;
  }
  return url;
}

function link(url, innerHtml) {
  return `<a href="${escapeHtml(url)}" rel="noopener noreferrer" target="_blank">${innerHtml}</a>`;
}

// Placeholders for finished fragments. The NUL character cannot survive in the
// input (it is replaced first), so a placeholder can never be forged by a message.
const TOKEN = /\u0000(\d+)\u0000/g;

class Stash {
  constructor() {
    this.items = [];
  }
  put(html) {
    this.items.push(html);
    return `\u0000${this.items.length - 1}\u0000`;
  }
  restore(text) {
    // Fragments may hold placeholders themselves (code inside a link's text).
    for (let i = 0; i < 4 && text.includes('\u0000'); i++) {
      text = text.replace(TOKEN, (_, n) => this.items[Number(n)] ?? '');
    }
    return text;
  }
}

const CODE_SPAN = /`([^`\n]{1,2000})`/g;
const MD_LINK = /\[([^\[\]\n]{1,500})\]\(([^()\s]{1,2048})\)/g;
const BARE_URL = /\bhttps?:\/\/[^\s<>"'`\u0000]{1,2048}/gi;
const TRAILING = /[.,:;!?'"]+$/;
// The server's grammar (parley.domain.mentions): not after a letter, digit, _ . - @ /.
const MENTION = /(^|[^\p{L}\p{N}_.\-@/])@([A-Za-z0-9_.\-]{3,32})(?![A-Za-z0-9_.\-])/gu;

function inlineEmphasis(html) {
  // `html` is escaped text plus placeholders. Order matters: each later pattern
  // refuses '<', so it cannot straddle a tag an earlier pattern added.
  return html
    .replace(new RegExp(`~~(?=\\S)([^\\n]{0,${MAX_SPAN}}?\\S)~~`, 'g'), '<del>$1</del>')
    .replace(new RegExp(`\\*\\*(?=[^\\s*])([^<\\n]{0,${MAX_SPAN}}?[^\\s*<])\\*\\*`, 'g'), '<strong>$1</strong>')
    .replace(
      new RegExp(`(^|[^*\\w])\\*(?=[^\\s*])([^*<\\n]{0,${MAX_SPAN}}?[^\\s*<])\\*(?![*\\w])`, 'g'),
      '$1<em>$2</em>',
    )
    .replace(
      new RegExp(`(^|[^\\w])_(?=[^\\s_])([^_<\\n]{0,${MAX_SPAN}}?[^\\s_<])_(?!\\w)`, 'g'),
      '$1<em>$2</em>',
    );
}

function trimUrl(url) {
  let end = url.replace(TRAILING, '');
  // A closing parenthesis belongs to the URL only when it opened one: "(see http://x/a)".
  while (end.endsWith(')') && (end.match(/\(/g) || []).length < (end.match(/\)/g) || []).length) {
    end = end.slice(0, -1).replace(TRAILING, '');
  }
  return end;
}

function highlightMentions(text, stash, mentions) {
  return text.replace(MENTION, (whole, before, found) => {
    let name = found.toLowerCase();
    if (!mentions.names.has(name)) name = name.replace(/[.-]+$/, '');
    if (!mentions.names.has(name)) return whole;
    const cls = name === mentions.me || name === 'room' ? 'mention me' : 'mention';
    const shown = found.slice(0, name.length);
    return `${before}${stash.put(`<span class="${cls}">@${escapeHtml(shown)}</span>`)}${found.slice(name.length)}`;
  });
}

/** Render one run of inline text (raw, unescaped) to HTML. */
function renderInline(raw, stash, mentions) {
  let text = raw.replace(CODE_SPAN, (_, code) => stash.put(`<code>${escapeHtml(code)}</code>`));
  text = text.replace(MD_LINK, (whole, label, url) => {
    const safe = safeUrl(url);
    if (!safe) return whole;
    return stash.put(link(safe, inlineEmphasis(escapeHtml(label))));
  });
  text = text.replace(BARE_URL, (found) => {
    const url = trimUrl(found);
    const safe = safeUrl(url);
    if (!safe) return found;
    return stash.put(link(safe, escapeHtml(url))) + found.slice(url.length);
  });
  if (mentions && text.includes('@')) text = highlightMentions(text, stash, mentions);
  return inlineEmphasis(escapeHtml(text));
}

function renderParagraph(lines, stash, mentions) {
  return `<p>${lines.map((line) => renderInline(line, stash, mentions)).join('<br>')}</p>`;
}

function renderBlocks(lines, depth, stash, mentions) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s{0,3}```/.test(line);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !/^\s{0,3}```\s*$/.test(lines[i])) body.push(lines[i++]);
      i++; // the closing fence (or the end)
      out.push(`<pre><code>${escapeHtml(body.join('\n'))}</code></pre>`);
      continue;
    }
    if (depth < MAX_QUOTE_DEPTH && /^\s{0,3}>/.test(line)) {
      const inner = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) {
        inner.push(lines[i++].replace(/^\s{0,3}> ?/, ''));
      }
      out.push(`<blockquote>${renderBlocks(inner, depth + 1, stash, mentions)}</blockquote>`);
      continue;
    }
    if (!line.trim()) {
      i++;
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !/^\s{0,3}```/.test(lines[i]) &&
      !(depth < MAX_QUOTE_DEPTH && /^\s{0,3}>/.test(lines[i]))
    ) {
      para.push(lines[i++]);
    }
    out.push(renderParagraph(para, stash, mentions));
  }
  return out.join('');
}

/**
 * Render a message body (Markdown source) to safe HTML.
 * @param {string} source
 * @param {{names: Set<string>, me?: string}} [mentions]  usernames (lower case, and
 *   "room") the server found mentioned: each `@name` of them is highlighted.
 */
export function renderMarkdown(source, mentions = null) {
  const text = String(source ?? '')
    .replace(/\r\n?/g, '\n')
    .replace(/\u0000/g, '\ufffd');
  const stash = new Stash();
  const wanted = mentions && mentions.names.size ? mentions : null;
  return stash.restore(renderBlocks(text.split('\n'), 0, stash, wanted));
}

const EMOJI_ONLY = /^(?:\p{Extended_Pictographic}(?:\uFE0F|\p{Emoji_Modifier}|\u200D\p{Extended_Pictographic})*\s*){1,3}$/u;

/** True for a body of one to three emoji and nothing else (shown larger). */
export function isEmojiOnly(source) {
  return EMOJI_ONLY.test(String(source ?? '').trim());
}

/** Plain text of a body for previews and announcements (Markdown marks removed). */
export function plainText(source, max = 140) {
  const text = String(source ?? '')
    .replace(/```[\s\S]*?```/g, ' [code] ')
    .replace(/\[([^\]\n]*)\]\([^)\s]*\)/g, '$1')
    .replace(/[*_~`>]+/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
