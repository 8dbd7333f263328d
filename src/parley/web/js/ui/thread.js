// Threads: the summary under a root message ("3 replies · 5 min ago"), and the
// thread pane beside the timeline: the root, every reply, and a box to reply in.
//
// The pane follows its thread live: replies, edits and deletions arrive as the
// room's own events (store.applyThread marks 'thread:<root id>' dirty), and the
// root's summary moves with each reply's `root_thread`.

import { renderMarkdown } from '../markdown.js';
import { clear, formatAgo, formatFull, formatTime, h } from '../util.js';
import { avatar } from './sidebar.js';

const MAX_FACES = 3;

/** The line under a root: who took part, how many replies, the last one's age. */
export function threadSummary(store, m, onOpen) {
  const t = m.thread;
  if (!t || !t.reply_count) return null;
  const count = `${t.reply_count} ${t.reply_count === 1 ? 'reply' : 'replies'}`;
  return h(
    'button',
    {
      type: 'button',
      class: 'thread-summary',
      title: t.last_reply_at ? `Last reply ${formatFull(t.last_reply_at)}` : null,
      onclick: () => onOpen(m),
    },
    h('span', { class: 'thread-faces' }, (t.participants || []).slice(0, MAX_FACES).map((id) => avatar(store, id, 'xs'))),
    h('span', { class: 'thread-count' }, count),
    t.last_reply_at ? h('span', { class: 'thread-ago' }, formatAgo(t.last_reply_at)) : null,
    h('span', { class: 'sr-only' }, ': open the thread'),
  );
}

export class ThreadPane {
  constructor({ store, client, toast }) {
    this.store = store;
    this.client = client;
    this.toast = toast;
    this.el = document.getElementById('thread');
    this.body = document.getElementById('thread-body');
    this.form = document.getElementById('thread-form');
    this.input = document.getElementById('thread-input');
    this.error = document.getElementById('thread-error');
    this.roomId = null;
    this.rootId = null;
    this.sending = false;
    document.getElementById('thread-close').addEventListener('click', () => this.close());
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      } else if (event.key === 'Escape') this.close();
    });
  }

  get isOpen() {
    return this.rootId !== null;
  }

  /** Open the thread of `message` (a root, or a reply: its root's thread). */
  async open(r, message) {
    this.roomId = r.id;
    this.rootId = message.thread_root_id || message.id;
    this.el.hidden = false;
    document.body.classList.add('thread-open');
    this.error.textContent = '';
    this.render();
    this.input.focus();
    try {
      await this.client.loadThread(r, this.rootId);
    } catch (err) {
      this.toast(`Could not open the thread: ${err.message}`, 'error');
    }
  }

  close() {
    if (!this.isOpen) return;
    this.store.rooms.get(this.roomId)?.threads.delete(this.rootId);
    this.roomId = null;
    this.rootId = null;
    this.el.hidden = true;
    document.body.classList.remove('thread-open');
  }

  /** Dirty topics that concern the pane. */
  wants(dirty) {
    return this.isOpen && (dirty.has(`thread:${this.rootId}`) || dirty.has('users') || dirty.has('current'));
  }

  render() {
    if (!this.isOpen) return;
    if (this.store.currentRoomId !== this.roomId) {
      this.close();
      return;
    }
    const r = this.store.rooms.get(this.roomId);
    const thread = r?.threads.get(this.rootId);
    const stick = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 48;
    clear(this.body);
    if (!thread) {
      this.body.append(h('p', { class: 'thread-status' }, 'Loading the thread…'));
      return;
    }
    const replies = [...thread.replies.values()].sort((a, b) => a.seq - b.seq);
    const live = replies.filter((m) => !m.deleted).length;
    this.body.append(
      this.message(thread.root, 'thread-root'),
      h('div', { class: 'thread-sep', role: 'separator' }, live ? `${live} ${live === 1 ? 'reply' : 'replies'}` : 'No replies yet'),
      h('ol', { class: 'thread-replies', 'aria-label': 'Replies' }, replies.map((m) => h('li', null, this.message(m, 'thread-reply')))),
    );
    this.form.hidden = Boolean(thread.root.deleted);
    if (stick) this.body.scrollTop = this.body.scrollHeight;
  }

  message(m, className) {
    const name = this.store.displayName(m.sender_id);
    const body = h('div', { class: 'msg-body' });
    if (m.deleted) body.append(h('p', { class: 'tombstone' }, 'This message was deleted.'));
    // markdown.js escapes everything it renders, as in the timeline.
    else body.innerHTML = renderMarkdown(m.body);
    return h(
      'article',
      { class: `thread-msg ${className}`, dataset: { id: m.id } },
      avatar(this.store, m.sender_id, 'sm'),
      h(
        'div',
        { class: 'msg-main' },
        h(
          'div',
          { class: 'msg-head' },
          h('span', { class: 'msg-author' }, name),
          h('time', { datetime: m.created_at, title: formatFull(m.created_at) }, formatTime(m.created_at)),
        ),
        body,
      ),
    );
  }

  async send() {
    const r = this.store.rooms.get(this.roomId);
    if (!r || this.sending) return;
    const text = this.input.value;
    this.sending = true;
    this.error.textContent = '';
    try {
      await this.client.reply(r, this.rootId, text);
      this.input.value = '';
      this.body.scrollTop = this.body.scrollHeight;
    } catch (err) {
      this.error.textContent = err.message;
    } finally {
      this.sending = false;
    }
  }
}
