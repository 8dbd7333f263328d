// The message list of the open room.
//
// Rendering is keyed reconciliation: each message (or pending send) keeps one
// <li> for its lifetime, rebuilt only when its signature changes, so focus,
// selection and scroll survive updates. A pending message and the message it
// becomes share a key (its client_msg_id): the ack turns it into a normal one in
// place. Scroll: stuck to the bottom while the reader is there; otherwise the
// first visible item is kept where it was (older pages prepend without a jump).

import { isEmojiOnly, renderMarkdown } from '../markdown.js';
import { mentionNames, mentionsMe } from './mentions.js';
import { noticeText } from '../store.js';
import { clear, dayKey, formatDay, formatFull, formatTime, h, parseTime } from '../util.js';
import { confirmDialog } from './dialogs.js';
import { icon } from './icons.js';
import { openMenu } from './menu.js';
import { avatar } from './sidebar.js';
import { threadSummary } from './thread.js';

const GROUP_WINDOW_MS = 5 * 60 * 1000;
const NEAR_TOP_PX = 400;
const AT_BOTTOM_PX = 48;
export const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];

export class Timeline {
  constructor({ store, client, toast, focusComposer, onOpenThread = () => {} }) {
    this.store = store;
    this.onOpenThread = onOpenThread;
    this.client = client;
    this.toast = toast;
    this.focusComposer = focusComposer;
    this.scroller = document.getElementById('timeline');
    this.list = document.getElementById('messages');
    this.status = document.getElementById('history-status');
    this.jump = document.getElementById('jump-latest');
    this.roomId = null;
    this.els = new Map(); // key -> <li>
    this.stick = true;
    this.placed = false; // initial scroll position set for this room
    this.editing = null; // {roomId, id, draft, version, conflict, saving}

    this.list.tabIndex = 0;
    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    this.list.addEventListener('keydown', (e) => this.onKey(e));
    this.jump.addEventListener('click', () => this.toBottom(true));
    new ResizeObserver(() => {
      if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
    }).observe(this.scroller);
    document.addEventListener('visibilitychange', () => this.trackRead());
  }

  get room() {
    return this.store.current;
  }

  // -- rendering ----------------------------------------------------------------

  render() {
    const r = this.room;
    if (!r) {
      this.reset(null);
      return;
    }
    if (r.id !== this.roomId) this.reset(r.id);
    const anchor = this.stick ? null : this.anchor();
    const items = this.items(r);
    let cursor = this.list.firstChild;
    const wanted = new Set();
    for (const item of items) {
      wanted.add(item.key);
      let el = this.els.get(item.key);
      if (!el) {
        el = h('li');
        this.els.set(item.key, el);
      }
      if (el.sig !== item.sig) {
        const hadFocus = el.contains(document.activeElement) && document.activeElement;
        this.build(el, item, r);
        el.sig = item.sig;
        if (hadFocus === el) el.focus();
        else if (hadFocus) el.querySelector('.msg-editor textarea')?.focus();
      }
      if (el !== cursor) this.list.insertBefore(el, cursor);
      else cursor = cursor.nextSibling;
    }
    for (const [key, el] of this.els) {
      if (!wanted.has(key)) {
        if (el.contains(document.activeElement)) this.list.focus({ preventScroll: true });
        el.remove();
        this.els.delete(key);
      }
    }
    this.renderStatus(r);
    this.position(r, anchor);
  }

  reset(roomId) {
    this.roomId = roomId;
    clear(this.list);
    this.els.clear();
    this.stick = true;
    this.placed = false;
    if (this.editing?.roomId !== roomId) this.editing = null;
    this.jump.hidden = true;
    this.status.textContent = '';
  }

  items(r) {
    const me = this.store.me.id;
    const pending = [...r.pending.values()]
      .sort((a, b) => a.queuedAt - b.queuedAt || a.created_at.localeCompare(b.created_at))
      .map((p) => ({ ...p, id: null, seq: null, sender_id: me, pending: true, reactions: {} }));
    // Replies live in their thread's pane; their root shows the thread's summary.
    const all = r.loaded ? [...withNotices(r).filter((m) => !m.thread_root_id), ...pending] : pending;
    const items = [];
    let prev = null;
    let lastDay = null;
    let marker = r.markerSeq;
    for (const m of all) {
      const day = dayKey(m.created_at);
      if (day !== lastDay) {
        const label = formatDay(m.created_at);
        items.push({ key: `d:${day}`, kind: 'day', sig: `day|${label}`, label });
        lastDay = day;
        prev = null;
      }
      if (m.notice) {
        const text = noticeText(m, (id) => this.store.displayName(id), me);
        items.push({ key: `n:${m.seq}`, kind: 'notice', sig: `notice|${text}`, text, n: m });
        prev = null;
        continue;
      }
      if (marker != null && !m.pending && m.seq > marker && m.sender_id !== me) {
        items.push({ key: 'new', kind: 'marker', sig: 'marker' });
        marker = null;
        prev = null;
      }
      const grouped = Boolean(
        prev &&
          prev.sender_id === m.sender_id &&
          !prev.deleted &&
          !m.deleted &&
          parseTime(m.created_at) - parseTime(prev.created_at) < GROUP_WINDOW_MS,
      );
      const key = m.pending || (m.client_msg_id && m.sender_id === me) ? `c:${m.client_msg_id}` : `m:${m.id}`;
      const editing = this.editing && this.editing.id === m.id && m.id ? this.editing : null;
      const sig = JSON.stringify([
        m.id,
        m.version,
        m.deleted,
        m.pending ? `${m.state}/${this.store.conn.state === 'live'}` : '',
        m.pending ? m.error || '' : '',
        grouped,
        this.store.displayName(m.sender_id),
        m.reactions,
        m.thread ? [m.thread.reply_count, m.thread.last_reply_at, m.thread.participants] : null,
        editing ? [editing.version, Boolean(editing.conflict), editing.saving, editing.error] : null,
        r.role,
      ]);
      items.push({ key, kind: 'msg', m, grouped, sig, editing });
      prev = m;
    }
    return items;
  }

  build(li, item, r) {
    clear(li);
    li.removeAttribute('tabindex');
    li.removeAttribute('aria-label');
    delete li.dataset.seq;
    if (item.kind === 'day') {
      li.className = 'day-sep';
      li.append(h('span', { role: 'separator', 'aria-label': item.label }, item.label));
      return;
    }
    if (item.kind === 'notice') {
      li.className = 'sys-line';
      li.dataset.seq = String(item.n.seq);
      li.append(
        h('span', { class: 'sys-text' }, item.text),
        h('time', { datetime: item.n.created_at, title: formatFull(item.n.created_at) }, formatTime(item.n.created_at)),
      );
      return;
    }
    if (item.kind === 'marker') {
      li.className = 'unread-marker';
      li.append(h('span', null, 'New messages'));
      return;
    }
    this.buildMessage(li, item, r);
  }

  buildMessage(li, { m, grouped, editing }, r) {
    const me = this.store.me.id;
    const mine = m.sender_id === me;
    const name = this.store.displayName(m.sender_id);
    li.className = [
      'msg',
      grouped ? 'grouped' : '',
      mine ? 'mine' : '',
      m.pending ? `pending ${m.state}` : '',
      m.deleted ? 'deleted' : '',
      editing ? 'editing' : '',
      !mine && !m.deleted && mentionsMe(m, me) ? 'mentions-me' : '',
    ]
      .filter(Boolean)
      .join(' ');
    li.tabIndex = -1;
    if (m.seq != null) li.dataset.seq = String(m.seq);
    li.dataset.key = m.id || m.client_msg_id;

    const time = h('time', { datetime: m.created_at, title: formatFull(m.created_at) }, formatTime(m.created_at));
    const gutter = h('div', { class: 'msg-gutter' }, grouped ? time.cloneNode(true) : avatar(this.store, m.sender_id));
    const main = h('div', { class: 'msg-main' });
    if (grouped) main.append(h('span', { class: 'sr-only' }, `${name}, ${formatTime(m.created_at)}: `));
    else main.append(h('div', { class: 'msg-head' }, h('span', { class: 'msg-author' }, name), time));

    if (editing) {
      main.append(this.editor(r, m, editing));
    } else if (m.deleted) {
      main.append(h('p', { class: 'msg-body tombstone' }, 'This message was deleted.'));
    } else {
      const body = h('div', { class: `msg-body${isEmojiOnly(m.body) ? ' jumbo' : ''}` });
      // The one place a message reaches innerHTML: markdown.js escapes all of it.
      body.innerHTML = renderMarkdown(m.body, mentionNames(this.store, m));
      if (m.edited_at) {
        const mark = h('span', { class: 'edited', title: `Edited ${formatFull(m.edited_at)}` }, ' (edited)');
        const last = body.lastElementChild;
        (last && last.tagName === 'P' ? last : body).append(mark);
      }
      main.append(body);
    }

    if (m.pending) main.append(this.pendingStatus(r, m));
    if (!m.pending && !m.deleted) {
      const reactions = this.reactions(r, m);
      if (reactions) main.append(reactions);
    }
    if (!m.pending) {
      const summary = threadSummary(this.store, m, (root) => this.onOpenThread(r, root));
      if (summary) main.append(summary);
    }
    li.append(gutter, main);
    if (!m.pending && !m.deleted && !editing) li.append(this.actions(r, m, mine));
  }

  pendingStatus(r, m) {
    if (m.state === 'failed') {
      return h(
        'div',
        { class: 'msg-status failed' },
        h('span', null, `Not sent. ${m.error || ''}`.trim()),
        h('button', { type: 'button', class: 'link-btn', onclick: () => this.client.retry(r, m.client_msg_id) }, 'Retry'),
        h('button', { type: 'button', class: 'link-btn', onclick: () => this.client.discard(r, m.client_msg_id) }, 'Discard'),
      );
    }
    const text = this.store.conn.state === 'live' ? 'Sending…' : 'Waiting for the connection to send…';
    return h('div', { class: 'msg-status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
  }

  reactions(r, m) {
    const entries = Object.entries(m.reactions || {}).filter(([, users]) => users.length);
    if (!entries.length) return null;
    const me = this.store.me.id;
    return h(
      'div',
      { class: 'reactions' },
      entries.map(([emoji, users]) => {
        const mine = users.includes(me);
        const names = users.map((id) => (id === me ? 'you' : this.store.displayName(id)));
        return h(
          'button',
          {
            type: 'button',
            class: `reaction${mine ? ' mine' : ''}`,
            'aria-pressed': mine,
            'aria-label': `${emoji} ${users.length}: ${names.join(', ')}`,
            title: `${names.join(', ')} reacted with ${emoji}`,
            onclick: () => this.react(r, m.id, emoji),
          },
          h('span', { class: 'reaction-emoji' }, emoji),
          h('span', { class: 'reaction-count' }, String(users.length)),
        );
      }),
    );
  }

  actions(r, m, mine) {
    const canDelete = mine || r.role === 'owner' || r.role === 'admin';
    const react = h(
      'button',
      {
        type: 'button',
        class: 'icon-btn',
        title: 'Add reaction',
        'aria-label': 'Add reaction',
        'aria-haspopup': 'menu',
        'aria-expanded': false,
      },
      icon('smile-plus'),
    );
    react.addEventListener('click', () => this.picker(react, r, m.id));
    return h(
      'div',
      { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' },
      react,
      h('button', { type: 'button', class: 'icon-btn', title: 'Reply in thread', 'aria-label': 'Reply in thread', onclick: () => this.onOpenThread(r, m) }, icon('reply')),
      mine
        ? h('button', { type: 'button', class: 'icon-btn', title: 'Edit', 'aria-label': 'Edit message', onclick: () => this.startEdit(r, m.id) }, icon('edit'))
        : null,
      canDelete
        ? h('button', { type: 'button', class: 'icon-btn danger', title: 'Delete', 'aria-label': 'Delete message', onclick: () => this.remove(r, m.id) }, icon('trash'))
        : null,
    );
  }

  renderStatus(r) {
    let text = '';
    if (!r.loaded) text = 'Loading messages…';
    else if (r.loadingOlder) text = 'Loading older messages…';
    else if (!r.hasMore) {
      const name = this.store.roomName(r);
      text = r.isDm
        ? `This is the beginning of your conversation with ${name}.`
        : `This is the very beginning of #${name}.`;
    }
    if (this.status.textContent !== text) this.status.textContent = text;
    this.status.classList.toggle('origin', r.loaded && !r.hasMore);
  }

  // -- scrolling and reading ----------------------------------------------------

  anchor() {
    const top = this.scroller.getBoundingClientRect().top;
    for (const el of this.list.children) {
      const rect = el.getBoundingClientRect();
      if (rect.bottom > top) return { el, top: rect.top };
    }
    return null;
  }

  position(r, anchor) {
    const s = this.scroller;
    if (!this.placed && r.loaded) {
      this.placed = true;
      const marker = this.els.get('new');
      if (marker && s.scrollHeight - marker.offsetTop > s.clientHeight) {
        s.scrollTop = marker.offsetTop - 48;
        this.stick = false;
      } else {
        s.scrollTop = s.scrollHeight;
        this.stick = true;
      }
    } else if (this.stick) {
      s.scrollTop = s.scrollHeight;
    } else if (anchor && anchor.el.isConnected) {
      s.scrollTop += anchor.el.getBoundingClientRect().top - anchor.top;
    }
    this.afterScroll(r);
  }

  /** Scroll message `seq` (already rendered) into view and mark it for a moment: a
   * search result in its context. False if it is not in the timeline. */
  reveal(seq) {
    const el = this.list.querySelector(`li[data-seq="${Number(seq)}"]`);
    if (!el || !this.room) return false;
    this.placed = true;
    this.stick = false;
    el.scrollIntoView({ block: 'center' });
    el.classList.add('flash');
    setTimeout(() => el.classList.remove('flash'), 2500);
    this.afterScroll(this.room);
    return true;
  }

  onScroll() {
    const r = this.room;
    if (!r) return;
    this.stick = this.atBottom();
    this.afterScroll(r);
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < AT_BOTTOM_PX;
  }

  afterScroll(r) {
    const s = this.scroller;
    const room = this.client.store.current;
    if (room !== r) return;
    if (r.loaded && r.hasMore && !r.loadingOlder && s.scrollTop < NEAR_TOP_PX) {
      this.client.loadOlder(r).catch((err) => this.toast(err.message, 'error'));
    }
    this.jump.hidden = this.stick || s.scrollHeight - s.scrollTop - s.clientHeight < s.clientHeight / 2;
    this.trackRead();
  }

  /** Move the read cursor to the newest message the reader can see. */
  trackRead() {
    const r = this.room;
    if (!r || !r.loaded || document.visibilityState !== 'visible') return;
    if (this.stick || this.atBottom()) {
      this.client.noteRead(r, r.seen);
      return;
    }
    const bottom = this.scroller.getBoundingClientRect().bottom;
    const children = this.list.children;
    for (let i = children.length - 1; i >= 0; i--) {
      const el = children[i];
      if (!el.dataset.seq) continue;
      if (el.getBoundingClientRect().bottom <= bottom + 2) {
        this.client.noteRead(r, Number(el.dataset.seq));
        return;
      }
    }
  }

  toBottom(focus = false) {
    this.stick = true;
    this.scroller.scrollTop = this.scroller.scrollHeight;
    if (focus) this.focusComposer();
  }

  // -- keyboard -----------------------------------------------------------------

  messages() {
    return [...this.list.querySelectorAll(':scope > li.msg')];
  }

  onKey(event) {
    if (event.target.closest('.msg-editor')) return;
    const all = this.messages();
    if (!all.length) return;
    const current = event.target.closest('li.msg');
    const i = current ? all.indexOf(current) : all.length;
    let next = null;
    switch (event.key) {
      case 'ArrowUp':
        next = all[Math.max(0, i - 1)];
        break;
      case 'ArrowDown':
        if (current && i === all.length - 1) {
          event.preventDefault();
          this.focusComposer();
          return;
        }
        next = all[Math.min(all.length - 1, i + 1)];
        break;
      case 'Home':
        next = all[0];
        break;
      case 'End':
        next = all[all.length - 1];
        break;
      case 'Escape':
        event.preventDefault();
        this.focusComposer();
        return;
      case 'e':
      case 'E':
        if (current?.classList.contains('mine') && current.dataset.seq) {
          event.preventDefault();
          const m = this.room?.messages.find((x) => String(x.seq) === current.dataset.seq);
          if (m) this.startEdit(this.room, m.id);
        }
        return;
      default:
        return;
    }
    if (next && event.target === current && next === current) return;
    event.preventDefault();
    next?.focus();
    next?.scrollIntoView({ block: 'nearest' });
  }

  // -- actions --------------------------------------------------------------------

  picker(anchor, r, messageId) {
    openMenu(
      anchor,
      QUICK_EMOJI.map((emoji) => ({
        label: emoji,
        ariaLabel: `React with ${emoji}`,
        onSelect: () => this.react(r, messageId, emoji),
      })),
      { label: 'Reactions', grid: 4, className: 'emoji-menu' },
    );
  }

  async react(r, messageId, emoji) {
    const m = r.byId.get(messageId);
    if (!m) return;
    try {
      await this.client.react(r, m, emoji);
    } catch (err) {
      this.toast(`Could not react: ${err.message}`, 'error');
    }
  }

  async remove(r, messageId) {
    const m = r.byId.get(messageId);
    if (!m) return;
    const ok = await confirmDialog({
      title: 'Delete message?',
      message: 'This removes the message for everyone. It cannot be undone.',
      confirmLabel: 'Delete',
      danger: true,
    });
    if (!ok) return;
    try {
      await this.client.remove(r, m);
      this.focusComposer();
    } catch (err) {
      this.toast(`Could not delete: ${err.message}`, 'error');
    }
  }

  /** Edit the newest own message of the room (the composer's Up arrow). */
  editLast() {
    const r = this.room;
    if (!r) return false;
    const me = this.store.me.id;
    for (let i = r.messages.length - 1; i >= 0; i--) {
      const m = r.messages[i];
      if (m.sender_id === me && !m.deleted && !m.thread_root_id) {
        this.startEdit(r, m.id);
        return true;
      }
    }
    return false;
  }

  startEdit(r, messageId) {
    const m = r.byId.get(messageId);
    if (!m || m.deleted) return;
    this.editing = { roomId: r.id, id: m.id, draft: m.body, version: m.version, conflict: null, saving: false, error: '' };
    this.render();
    const el = this.list.querySelector('.msg-editor textarea');
    if (el) {
      el.focus();
      el.setSelectionRange(el.value.length, el.value.length);
      el.closest('li')?.scrollIntoView({ block: 'nearest' });
    }
  }

  cancelEdit() {
    this.editing = null;
    this.render();
    this.focusComposer();
  }

  editor(r, m, editing) {
    const area = h('textarea', { 'aria-label': 'Edit message', rows: 1 });
    area.value = editing.draft;
    area.addEventListener('input', () => {
      editing.draft = area.value;
    });
    area.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        this.cancelEdit();
      } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.saveEdit(r);
      }
    });
    const form = h('form', { class: 'msg-editor' }, area);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveEdit(r);
    });
    if (editing.conflict) {
      const current = h('div', { class: 'msg-body' });
      current.innerHTML = renderMarkdown(editing.conflict.body);
      form.append(
        h(
          'div',
          { class: 'conflict', role: 'alert' },
          h('strong', null, 'This message was changed elsewhere while you were editing.'),
          h('span', null, ' It now reads:'),
          current,
          h('span', null, 'Your text is kept above. Save to replace it, or press Escape to keep the current version.'),
        ),
      );
    }
    if (editing.error) form.append(h('p', { class: 'form-error', role: 'alert' }, editing.error));
    form.append(
      h(
        'div',
        { class: 'editor-actions' },
        h('span', { class: 'muted' }, 'Escape to cancel · Enter to save'),
        h('button', { type: 'button', class: 'btn btn-sm', onclick: () => this.cancelEdit() }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-sm btn-primary', disabled: editing.saving }, 'Save'),
      ),
    );
    return form;
  }

  async saveEdit(r) {
    const editing = this.editing;
    if (!editing || editing.saving) return;
    const m = r.byId.get(editing.id);
    if (!m) return this.cancelEdit();
    const body = editing.draft;
    if (!body.trim()) {
      this.cancelEdit();
      return this.remove(r, m.id);
    }
    if (body === m.body && m.version === editing.version) return this.cancelEdit();
    editing.saving = true;
    editing.error = '';
    this.render();
    try {
      const result = await this.client.edit(r, m, body, editing.version);
      if (this.editing !== editing) return;
      if (result.ok) {
        this.editing = null;
        this.render();
        this.focusComposer();
        return;
      }
      const current = result.conflict;
      if (!current || current.deleted) {
        this.editing = null;
        this.toast('That message was deleted while you were editing it.', 'error');
        this.render();
        this.focusComposer();
        return;
      }
      editing.version = current.version;
      editing.conflict = current;
    } catch (err) {
      editing.error = `Could not save: ${err.message}`;
    } finally {
      editing.saving = false;
    }
    this.render();
    this.list.querySelector('.msg-editor textarea')?.focus();
  }
}

/**
 * The loaded messages with the room's system lines between them, by seq. Lines
 * older than the oldest loaded message wait until history reaches them.
 */
function withNotices(r) {
  if (!r.notices.length) return r.messages;
  const first = r.hasMore ? (r.messages[0]?.seq ?? Infinity) : -Infinity;
  const notices = r.notices.filter((n) => n.seq > first).map((n) => ({ ...n, notice: true }));
  return [...r.messages, ...notices].sort((a, b) => a.seq - b.seq);
}
