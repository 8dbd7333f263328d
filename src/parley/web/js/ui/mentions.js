// Mentions in the web client: which names of a message to highlight (the server
// decides who was mentioned: `message.mentions` and `mentions_room`), and the
// composer's autocomplete of the room's members while typing `@`.
//
// The autocomplete is an ARIA combobox on the message box: ↑/↓ move, Enter or Tab
// insert `@username `, Escape closes; a click inserts too. Its key handler runs in
// the capture phase so the composer's Enter-to-send does not see the keys it uses.

import { h } from '../util.js';

const MAX_OPTIONS = 8;
// The token being typed: `@` and up to 32 name characters, right before the caret,
// where the server would see a mention start (not after a letter, digit, _ . - @ /).
const TYPING = /(^|[^\p{L}\p{N}_.\-@/])@([A-Za-z0-9_.\-]{0,32})$/u;

/** The usernames (lower case; "room") to highlight in `m`, for renderMarkdown. */
export function mentionNames(store, m) {
  const names = new Set();
  for (const id of m.mentions || []) {
    const user = store.users.get(id);
    if (user) names.add(user.username.toLowerCase());
  }
  if (m.mentions_room) names.add('room');
  return names.size ? { names, me: store.me?.username?.toLowerCase() } : null;
}

/** Whether `m` mentions the user `me` (by name, or @room). */
export function mentionsMe(m, me) {
  return Boolean(m.mentions_room || (m.mentions && m.mentions.includes(me)));
}

export class MentionAutocomplete {
  /** @param {{store: import('../store.js').Store, input: HTMLTextAreaElement}} o */
  constructor({ store, input }) {
    this.store = store;
    this.input = input;
    this.options = [];
    this.active = 0;
    this.start = -1;
    this.list = h('ul', { id: 'mention-options', class: 'mention-options', role: 'listbox', 'aria-label': 'People to mention', hidden: true });
    input.closest('.composer-wrap').append(this.list);
    input.setAttribute('role', 'combobox');
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', 'mention-options');
    input.setAttribute('aria-expanded', 'false');
    input.addEventListener('keydown', (event) => this.onKey(event), { capture: true });
    input.addEventListener('input', () => this.update());
    input.addEventListener('click', () => this.update());
    input.addEventListener('blur', () => setTimeout(() => this.close(), 150));
  }

  get isOpen() {
    return !this.list.hidden;
  }

  /** Members of the open room matching the token before the caret. */
  candidates(prefix) {
    const r = this.store.current;
    if (!r?.members) return [];
    const want = prefix.toLowerCase();
    const found = [];
    for (const [userId, role] of r.members) {
      if (userId === this.store.me.id) continue;
      const user = this.store.users.get(userId);
      if (!user) continue;
      const name = user.username.toLowerCase();
      const display = (user.display_name || '').toLowerCase();
      if (name.startsWith(want) || display.split(/\s+/).some((w) => w.startsWith(want))) {
        found.push({ username: user.username, label: user.display_name || user.username, role });
      }
    }
    found.sort((a, b) => Number(!a.username.startsWith(want)) - Number(!b.username.startsWith(want)) || a.username.localeCompare(b.username));
    const options = found.slice(0, MAX_OPTIONS);
    const mayRoom = !r.isDm && (r.role === 'owner' || r.role === 'admin');
    if (mayRoom && 'room'.startsWith(want)) options.push({ username: 'room', label: 'Notify everyone in this room', role: '' });
    return options;
  }

  update() {
    const { input } = this;
    const caret = input.selectionStart;
    if (caret !== input.selectionEnd) return this.close();
    const match = TYPING.exec(input.value.slice(0, caret));
    if (!match) return this.close();
    this.start = caret - match[2].length - 1;
    this.options = this.candidates(match[2]);
    if (!this.options.length) return this.close();
    this.active = Math.min(this.active, this.options.length - 1);
    this.render();
    return undefined;
  }

  render() {
    this.list.replaceChildren(
      ...this.options.map((o, i) =>
        h(
          'li',
          {
            id: `mention-option-${i}`,
            role: 'option',
            class: `mention-option${i === this.active ? ' active' : ''}`,
            'aria-selected': i === this.active,
            onpointerdown: (event) => {
              event.preventDefault();
              this.choose(i);
            },
          },
          h('span', { class: 'mention-handle' }, `@${o.username}`),
          h('span', { class: 'mention-label' }, o.label),
        ),
      ),
    );
    this.list.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
    this.input.setAttribute('aria-activedescendant', `mention-option-${this.active}`);
  }

  close() {
    if (this.list.hidden) return;
    this.list.hidden = true;
    this.options = [];
    this.active = 0;
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
  }

  choose(index) {
    const option = this.options[index];
    if (!option) return;
    const { input } = this;
    const caret = input.selectionStart;
    const text = `@${option.username} `;
    input.value = input.value.slice(0, this.start) + text + input.value.slice(caret);
    const at = this.start + text.length;
    input.setSelectionRange(at, at);
    this.close();
    input.dispatchEvent(new Event('input'));
  }

  onKey(event) {
    if (!this.isOpen || event.isComposing) return;
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves) {
      this.active = (this.active + moves[event.key] + this.options.length) % this.options.length;
      this.render();
    } else if ((event.key === 'Enter' && !event.shiftKey) || event.key === 'Tab') {
      this.choose(this.active);
    } else if (event.key === 'Escape') {
      this.close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}
