// The message box: Enter sends, Shift+Enter adds a line, Up edits the last own
// message, drafts are kept per room, typing notices are sent while typing.

import { MAX_BODY_BYTES } from '../client.js';
import { utf8Length } from '../util.js';

export class Composer {
  constructor({ store, client, onEditLast, onSent }) {
    this.store = store;
    this.client = client;
    this.onEditLast = onEditLast;
    this.onSent = onSent;
    this.form = document.getElementById('composer');
    this.input = document.getElementById('composer-input');
    this.error = document.getElementById('composer-error');
    this.label = document.getElementById('composer-label');
    this.typingEl = document.getElementById('typing');
    this.drafts = new Map();
    this.roomId = null;
    this.autosize = !CSS.supports('field-sizing', 'content');

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (event) => this.onKey(event));
    this.input.addEventListener('input', () => this.onInput());
  }

  focus() {
    if (!this.store.current) return;
    this.input.disabled = false;
    this.input.focus({ preventScroll: true });
  }

  render() {
    const r = this.store.current;
    const id = r?.id || null;
    if (id !== this.roomId) {
      if (this.roomId) this.drafts.set(this.roomId, this.input.value);
      this.roomId = id;
      this.input.value = (id && this.drafts.get(id)) || '';
      this.error.textContent = '';
      this.resize();
    }
    this.input.disabled = !r;
    const name = r ? this.store.roomName(r) : '';
    const placeholder = r ? `Message ${r.isDm ? name : `#${name}`}` : 'Pick a room to start chatting';
    if (this.input.placeholder !== placeholder) {
      this.input.placeholder = placeholder;
      this.label.textContent = placeholder;
    }
    this.renderTyping();
  }

  renderTyping() {
    const r = this.store.current;
    const ids = r ? this.client.typers(r) : [];
    const names = ids.map((id) => this.store.displayName(id));
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    if (this.typingEl.textContent !== text) this.typingEl.textContent = text;
  }

  onKey(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey) {
      event.preventDefault();
      this.submit();
    } else if (event.key === 'ArrowUp' && !this.input.value && !event.shiftKey) {
      if (this.onEditLast()) event.preventDefault();
    } else if (event.key === 'Escape' && this.error.textContent) {
      this.error.textContent = '';
    }
  }

  onInput() {
    this.resize();
    const r = this.store.current;
    if (!r) return;
    if (this.input.value.trim()) this.client.typing(r);
    const size = utf8Length(this.input.value);
    this.error.textContent =
      size > MAX_BODY_BYTES
        ? `Too long: ${size.toLocaleString()} of ${MAX_BODY_BYTES.toLocaleString()} bytes.`
        : '';
  }

  resize() {
    // Browsers without `field-sizing: content`: grow the box with its text
    // (CSSOM writes are allowed by the CSP; style attributes would not be).
    if (!this.autosize) return;
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 240)}px`;
  }

  submit() {
    const r = this.store.current;
    if (!r) return;
    const body = this.input.value;
    if (!body.trim()) return;
    const problem = this.client.send(r, body.replace(/\s+$/, ''));
    if (problem) {
      this.error.textContent = problem;
      return;
    }
    this.input.value = '';
    this.drafts.delete(r.id);
    this.error.textContent = '';
    this.resize();
    this.onSent();
  }
}
