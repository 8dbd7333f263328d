// Message search in a dialog: a query box (optionally this room only), results best
// first with their matched words marked, "More results" along the cursor, and a
// click that jumps to the message in its room.
//
// The server's `highlight` is HTML-escaped text with <mark> tags; it is turned into
// text nodes and <mark> elements here, never assigned as HTML.

import { clear, formatFull, h } from '../util.js';
import { closeDialog, showDialog } from './dialogs.js';

const PAGE = 20;
const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#x27;': "'", '&#39;': "'" };

/** The highlight as DOM nodes: escaped text, and <mark> around the matches. */
export function highlightNodes(highlight) {
  const nodes = [];
  const parts = String(highlight).split(/(<mark>|<\/mark>)/);
  let marked = false;
  for (const part of parts) {
    if (part === '<mark>') marked = true;
    else if (part === '</mark>') marked = false;
    else if (part) {
      const text = part.replace(/&(amp|lt|gt|quot|#x27|#39);/g, (e) => ENTITIES[e]);
      nodes.push(marked ? h('mark', null, text) : document.createTextNode(text));
    }
  }
  return nodes;
}

export function searchDialog({ client, store, onJump, onError }) {
  const input = h('input', {
    type: 'search',
    id: 'search-input',
    placeholder: 'Words, "a phrase", -exclude',
    'aria-label': 'Search messages',
    autocomplete: 'off',
    enterkeyhint: 'search',
  });
  const current = store.currentRoomId;
  const here = h('input', { type: 'checkbox', id: 'search-here' });
  const scope = current
    ? h('label', { class: 'search-scope' }, here, ` Only in ${store.roomName(store.rooms.get(current))}`)
    : null;
  const status = h('p', { class: 'muted', role: 'status', id: 'search-status' });
  const list = h('ul', { class: 'search-results', id: 'search-results', 'aria-label': 'Search results' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'More results');
  const form = h(
    'form',
    { class: 'dialog-form search-form', role: 'search' },
    h('div', { class: 'search-row' }, input, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Search')),
    scope,
    status,
    list,
    more,
  );
  showDialog('Search messages', form, { className: 'dialog-wide' });
  input.focus();

  let cursor = null;
  let query = null;
  let generation = 0;

  const run = async (append) => {
    const mine = ++generation;
    const params = { q: query.q, limit: PAGE, roomId: query.roomId, cursor: append ? cursor : null };
    status.textContent = 'Searching…';
    more.disabled = true;
    let page;
    try {
      page = await client.api.search(params);
    } catch (err) {
      if (mine !== generation) return;
      status.textContent = err?.message || 'The search failed.';
      more.hidden = true;
      return;
    }
    if (mine !== generation) return;
    if (!append) clear(list);
    for (const result of page.results) list.append(item(result));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    const n = list.children.length;
    status.textContent = n ? `${n}${cursor ? '+' : ''} message${n === 1 ? '' : 's'} found` : 'No messages found.';
  };

  const item = (result) => {
    const m = result.message;
    const r = store.rooms.get(result.room_id);
    const where = r ? (r.isDm ? store.roomName(r) : `#${store.roomName(r)}`) : 'a room';
    const open = async () => {
      closeDialog();
      try {
        await onJump(result.room_id, m);
      } catch (err) {
        onError(err);
      }
    };
    return h(
      'li',
      { class: 'search-result' },
      h(
        'button',
        { type: 'button', class: 'search-hit', onclick: open, dataset: { messageId: m.id } },
        h(
          'span',
          { class: 'search-meta' },
          h('strong', null, store.displayName(m.sender_id)),
          h('span', { class: 'muted' }, ` in ${where} · `),
          h('time', { class: 'muted', datetime: m.created_at }, formatFull(m.created_at)),
        ),
        h('span', { class: 'search-text' }, highlightNodes(result.highlight)),
      ),
    );
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (!q) {
      status.textContent = 'Type something to search for.';
      return;
    }
    query = { q, roomId: scope && here.checked ? current : null };
    cursor = null;
    run(false);
  });
  more.addEventListener('click', () => run(true));
}
