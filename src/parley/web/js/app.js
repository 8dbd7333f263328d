// Entry point: sign-in, then the chat shell. Wires the store, the controller and
// the UI components, routes on the URL hash (#/r/<room_id>), shows the
// connection banner and toasts, and holds the global keyboard shortcuts.

import { Api } from './api.js';
import { Client } from './client.js';
import { plainText } from './markdown.js';
import { Store } from './store.js';
import { accountItems } from './ui/account.js';
import { setupAuth } from './ui/auth.js';
import { Composer } from './ui/composer.js';
import { browseDialog, confirmDialog, formDialog } from './ui/dialogs.js';
import { groupDmDialog } from './ui/groupdm.js';
import { Header } from './ui/header.js';
import { Members } from './ui/members.js';
import { MentionAutocomplete } from './ui/mentions.js';
import { openMenu } from './ui/menu.js';
import { levelDialog, Notifications } from './ui/notifications.js';
import { searchDialog } from './ui/search.js';
import { Sidebar } from './ui/sidebar.js';
import { ThreadPane } from './ui/thread.js';
import { Timeline } from './ui/timeline.js';
import { h, sleep } from './util.js';

const NOTICE_KEY = 'parley.notice';
const LAST_ROOM_KEY = 'parley.lastRoom';
const MEMBERS_OPEN_KEY = 'parley.membersOpen';
const BANNER_DELAY_MS = 800;

const $ = (id) => document.getElementById(id);

class App {
  constructor() {
    const base = document.querySelector('meta[name="parley-api"]')?.content || '/api/v1';
    this.api = new Api({ base, onAuthLost: (reason) => this.signedOut(reason || 'Your session has ended. Please sign in again.') });
    this.auth = setupAuth({ api: this.api, onSignedIn: () => this.start() });
    this.started = false;
    this.bannerTimer = null;
    this.bannerTick = null;
  }

  async init() {
    if (this.api.signedIn) {
      await this.start();
    } else {
      $('boot').hidden = true;
      this.auth.show(sessionStorage.getItem(NOTICE_KEY) || '');
      sessionStorage.removeItem(NOTICE_KEY);
    }
  }

  /** Sign-out of any kind: reload into a clean sign-in page (no state survives). */
  signedOut(notice = '') {
    if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
    this.client?.stop();
    history.replaceState(null, '', location.pathname + location.search);
    location.reload();
  }

  async logout() {
    this.client?.stop();
    await this.api.logout();
    this.signedOut();
  }

  // -- start ------------------------------------------------------------------

  async start() {
    if (this.started) return;
    this.started = true;
    this.auth.hide();
    $('boot').hidden = false;
    const store = new Store();
    const client = new Client({
      api: this.api,
      store,
      hooks: {
        toast: (text, kind) => this.toast(text, kind),
        newMessage: (r, m) => this.onNewMessage(r, m),
        roomGone: (r, reason) => this.onRoomGone(r, reason),
        notification: (n) => this.notifications?.arrived(n),
        messageDeleted: (id) => this.notifications?.messageDeleted(id),
        // Notification frames are live only: after a reconnect the feed is reloaded.
        ready: () => this.notifications?.load(),
      },
    });
    this.store = store;
    this.client = client;
    for (let attempt = 0; ; attempt++) {
      try {
        await client.boot();
        break;
      } catch (err) {
        if (err?.name === 'AuthLost' || err?.status === 401) {
          this.signedOut('Please sign in again.');
          return;
        }
        $('boot').querySelector('span').textContent =
          `Cannot reach Parley (${err?.message || 'error'}). Retrying…`;
        await sleep(Math.min(30_000, 1_000 * 2 ** attempt));
      }
    }
    this.buildUi();
    $('boot').hidden = true;
    $('shell').hidden = false;
    window.addEventListener('hashchange', () => this.route());
    this.route();
  }

  buildUi() {
    const { store, client } = this;
    const focusComposer = () => this.composer.focus();
    this.sidebar = new Sidebar({ store, onMeMenu: (anchor) => this.meMenu(anchor) });
    this.header = new Header({
      store,
      onMembersToggle: () => this.toggleMembers(),
      onRoomMenu: (anchor) => this.roomMenu(anchor),
    });
    this.thread = new ThreadPane({ store, client, toast: (t, k) => this.toast(t, k) });
    this.timeline = new Timeline({
      store,
      client,
      toast: (t, k) => this.toast(t, k),
      focusComposer,
      onOpenThread: (r, m) => this.thread.open(r, m),
    });
    this.composer = new Composer({
      store,
      client,
      onEditLast: () => this.timeline.editLast(),
      onSent: () => this.timeline.toBottom(),
    });
    this.mentions = new MentionAutocomplete({ store, input: $('composer-input') });
    this.notifications = new Notifications({
      api: this.api,
      store,
      onOpen: (roomId) => this.go(roomId),
      toast: (t, k) => this.toast(t, k),
    });
    this.notifications.load();
    this.members = new Members({
      store,
      onAdd: (r) => this.addPeople(r),
      onMessage: (user) => this.startDm(user.username),
      onRemove: (r, userId, ban) => this.removeMember(r, userId, ban),
    });
    store.subscribe((dirty) => this.render(dirty));

    $('create-room').addEventListener('click', () => this.createRoom());
    $('browse-rooms').addEventListener('click', () => this.browse());
    $('new-dm').addEventListener('click', () => this.newDm());
    $('new-group-dm').addEventListener('click', () => groupDmDialog({ client, onOpen: (r) => this.go(r.id) }));
    $('members-close').addEventListener('click', () => this.toggleMembers(false));
    $('search-open').addEventListener('click', () => this.search());
    $('menu-toggle').addEventListener('click', () => this.toggleNav());
    $('scrim').addEventListener('click', () => this.toggleNav(false));
    $('sidebar').addEventListener('click', (event) => {
      if (event.target.closest('a.room-link')) this.toggleNav(false);
    });
    document.addEventListener('keydown', (event) => this.onKey(event));
    if (localStorage.getItem(MEMBERS_OPEN_KEY) === '1' && matchMedia('(min-width: 1100px)').matches) {
      this.toggleMembers(true, false);
    }
    this.render(new Set(['rooms', 'current', 'conn']));
  }

  render(dirty) {
    const current = this.store.currentRoomId;
    const any = (...topics) => topics.some((t) => dirty.has(t));
    if (any('rooms', 'users', 'presence', 'current', 'conn')) {
      this.sidebar.render();
      this.header.render();
      const unread = this.store.totalUnread();
      $('menu-unread').hidden = !unread;
    }
    if (any('current', `room:${current}`, 'users', 'conn')) this.timeline.render();
    if (any('current', 'rooms')) this.composer.render();
    if (dirty.has('current') && current) this.notifications.roomOpened(current);
    if (any('typing', 'users', 'current')) this.composer.renderTyping();
    if (any('current', `members:${current}`, 'presence', 'users', 'conn')) {
      this.members.render();
      this.header.render();
    }
    if (this.thread.wants(dirty)) this.thread.render();
    if (dirty.has('conn')) this.renderBanner();
  }

  // -- routing ------------------------------------------------------------------

  route({ quiet = false } = {}) {
    const match = /^#\/r\/([^/]+)$/.exec(location.hash);
    const wanted = match ? decodeURIComponent(match[1]) : null;
    if (wanted && this.store.rooms.has(wanted)) {
      this.open(wanted);
      return;
    }
    if (wanted && !quiet) this.toast('That room does not exist or you are not a member.', 'error');
    const fallback = this.defaultRoom();
    if (fallback) this.go(fallback, true);
    else {
      this.store.currentRoomId = null;
      this.store.touch('current');
      this.showWelcome();
    }
  }

  defaultRoom() {
    const last = localStorage.getItem(LAST_ROOM_KEY);
    if (last && this.store.rooms.has(last)) return last;
    const rooms = [...this.store.rooms.values()];
    rooms.sort((a, b) => Number(a.isDm) - Number(b.isDm) || this.store.roomName(a).localeCompare(this.store.roomName(b)));
    return rooms[0]?.id || null;
  }

  go(roomId, replace = false) {
    const hash = `#/r/${encodeURIComponent(roomId)}`;
    if (location.hash === hash) this.open(roomId);
    else if (replace) {
      history.replaceState(null, '', hash);
      this.open(roomId);
    } else location.hash = hash;
  }

  async open(roomId) {
    $('empty-state').hidden = true;
    const switching = this.store.currentRoomId !== roomId;
    localStorage.setItem(LAST_ROOM_KEY, roomId);
    const opening = this.client.openRoom(roomId);
    // Not on touch screens: focusing the box would pop the keyboard up over the room.
    if (switching && !matchMedia('(hover: none) and (pointer: coarse)').matches) {
      this.composer.focus();
    }
    try {
      await opening;
    } catch (err) {
      this.toast(`Could not open the room: ${err.message}`, 'error');
    }
  }

  showWelcome() {
    const empty = $('empty-state');
    empty.replaceChildren(
      h('h2', null, `Welcome to Parley, ${this.store.me.display_name || this.store.me.username}!`),
      h('p', null, 'You are not in any rooms yet. Join a public room or start your own.'),
      h(
        'div',
        { class: 'empty-actions' },
        h('button', { type: 'button', class: 'btn btn-primary', onclick: () => this.browse() }, 'Browse rooms'),
        h('button', { type: 'button', class: 'btn', onclick: () => this.createRoom() }, 'Create a room'),
        h('button', { type: 'button', class: 'btn', onclick: () => this.newDm() }, 'Message someone'),
      ),
    );
    empty.hidden = false;
  }

  // -- hooks from the controller -------------------------------------------------

  onNewMessage(r, m) {
    if (r.id !== this.store.currentRoomId) return;
    const name = this.store.displayName(m.sender_id);
    this.announce(`${name}: ${plainText(m.body, 200)}`);
  }

  onRoomGone(r, reason) {
    const name = r.isDm ? this.store.roomName(r) : `#${this.store.roomName(r)}`;
    const text = {
      kicked: `You were removed from ${name}.`,
      banned: `You were banned from ${name}.`,
    }[reason] || `You left ${name}.`;
    this.toast(text, reason === 'left' ? 'info' : 'error');
    if (!this.store.currentRoomId) this.route({ quiet: true });
  }

  // -- dialogs and menus -----------------------------------------------------------

  createRoom() {
    formDialog({
      title: 'Create a room',
      submitLabel: 'Create',
      fields: [
        { name: 'name', label: 'Name', required: true, maxlength: 80, placeholder: 'e.g. design-reviews' },
        { name: 'topic', label: 'Topic', maxlength: 500, placeholder: 'What is it about? (optional)' },
        {
          name: 'visibility',
          type: 'radio',
          label: 'Who can join',
          value: 'public',
          options: [
            { value: 'public', label: 'Public', hint: 'Anyone can find and join it.' },
            { value: 'private', label: 'Private', hint: 'Only people you add.' },
          ],
        },
      ],
      onSubmit: async ({ name, topic, visibility }) => {
        if (!name.trim()) throw new Error('Give the room a name.');
        const r = await this.client.createRoom(name.trim(), visibility || 'public', topic.trim());
        return () => this.go(r.id);
      },
    });
  }

  search() {
    searchDialog({
      client: this.client,
      store: this.store,
      onJump: (roomId, m) => this.jumpTo(roomId, m),
      onError: (err) => this.toast(err.message, 'error'),
    });
  }

  /** Open a search result's room with the message in view (older pages loaded). */
  async jumpTo(roomId, m) {
    const r = this.store.rooms.get(roomId);
    if (!r) throw new Error('You are no longer a member of that room.');
    this.go(roomId);
    await this.client.openRoom(roomId);
    if (!(await this.client.loadUntil(r, m.seq))) throw new Error('That message is no longer in the room.');
    for (let tries = 0; tries < 40; tries++) {
      if (this.store.currentRoomId !== roomId) return;
      if (this.timeline.reveal(m.seq)) return;
      await sleep(50);
    }
  }

  browse() {
    browseDialog({
      client: this.client,
      onOpen: (r) => this.go(r.id),
      onError: (err) => this.toast(err.message, 'error'),
    });
  }

  newDm() {
    formDialog({
      title: 'New direct message',
      submitLabel: 'Open',
      fields: [
        {
          name: 'username',
          label: 'Username',
          required: true,
          maxlength: 33,
          placeholder: 'e.g. alice',
          autocapitalize: 'none',
          spellcheck: false,
        },
      ],
      onSubmit: async ({ username }) => {
        if (!username.trim()) throw new Error('Type a username.');
        const r = await this.client.openDm(username);
        return () => this.go(r.id);
      },
    });
  }

  async startDm(username) {
    try {
      const r = await this.client.openDm(username);
      this.toggleMembers(false, false);
      this.go(r.id);
    } catch (err) {
      this.toast(err.message, 'error');
    }
  }

  addPeople(r) {
    formDialog({
      title: `Add people to #${this.store.roomName(r)}`,
      submitLabel: 'Add',
      fields: [{ name: 'username', label: 'Username', required: true, maxlength: 33, autocapitalize: 'none', spellcheck: false }],
      onSubmit: async ({ username }) => {
        const user = await this.client.addMember(r, username);
        this.toast(`Added ${user.display_name}.`, 'info');
      },
    });
  }

  roomSettings(r) {
    formDialog({
      title: `Room settings`,
      submitLabel: 'Save',
      fields: [
        { name: 'name', label: 'Name', required: true, maxlength: 80, value: r.room.name || '' },
        { name: 'topic', label: 'Topic', maxlength: 500, value: r.room.topic || '' },
      ],
      onSubmit: async ({ name, topic }) => {
        if (!name.trim()) throw new Error('Give the room a name.');
        const changes = {};
        if (name.trim() !== (r.room.name || '')) changes.name = name.trim();
        if (topic.trim() !== (r.room.topic || '')) changes.topic = topic.trim();
        if (Object.keys(changes).length) await this.client.updateRoom(r, changes);
      },
    });
  }

  async removeMember(r, userId, ban) {
    const name = this.store.displayName(userId);
    const room = `#${this.store.roomName(r)}`;
    const ok = await confirmDialog({
      title: ban ? `Ban ${name} from ${room}?` : `Remove ${name} from ${room}?`,
      message: ban
        ? 'They are removed and cannot join again until someone adds them back.'
        : r.room.visibility === 'private'
          ? 'They will need to be added again to come back.'
          : 'They can join again from the room directory.',
      confirmLabel: ban ? 'Ban' : 'Remove',
      danger: true,
    });
    if (!ok) return;
    try {
      await this.client.removeMember(r, userId, { ban });
    } catch (err) {
      this.toast(`Could not ${ban ? 'ban' : 'remove'} ${name}: ${err.message}`, 'error');
    }
  }

  async leave(r) {
    const ok = await confirmDialog({
      title: r.isGroup ? `Leave the conversation with ${this.store.roomName(r)}?` : `Leave #${this.store.roomName(r)}?`,
      message: r.isGroup
        ? 'The others can go on without you. Starting a group message with the same people brings you back.'
        : r.room.visibility === 'private'
          ? 'This is a private room: you will need to be added again to come back.'
          : 'You can join again from the room directory.',
      confirmLabel: 'Leave',
      danger: true,
    });
    if (!ok) return;
    try {
      await this.client.leaveRoom(r);
      localStorage.removeItem(LAST_ROOM_KEY);
      this.route({ quiet: true });
    } catch (err) {
      this.toast(`Could not leave: ${err.message}`, 'error');
    }
  }

  roomMenu(anchor) {
    const r = this.store.current;
    if (!r) return;
    const admin = r.role === 'owner' || r.role === 'admin';
    const items = [{ label: 'Members', onSelect: () => this.toggleMembers(true) }];
    const name = r.isDm ? this.store.roomName(r) : `#${this.store.roomName(r)}`;
    items.push({
      label: 'Notifications…',
      onSelect: () => levelDialog({ api: this.api, r, name }).catch((err) => this.toast(err.message, 'error')),
    });
    if (!r.isDm && admin) {
      items.push({ label: 'Add people', onSelect: () => this.addPeople(r) });
      items.push({ label: 'Room settings', onSelect: () => this.roomSettings(r) });
    }
    if (!r.isDm || r.isGroup) {
      items.push({ label: r.isGroup ? 'Leave conversation' : 'Leave room', danger: true, onSelect: () => this.leave(r) });
    }
    openMenu(anchor, items, { label: 'Room options' });
  }

  meMenu(anchor) {
    const me = this.store.me;
    openMenu(
      anchor,
      [
        ...accountItems({
          api: this.api,
          me,
          toast: (t, k) => this.toast(t, k),
          onRenamed: (user) => {
            Object.assign(me, user);
            this.store.touch('users');
          },
          onDeleted: () => {
            this.client?.stop();
            this.api.setTokens(null);
            this.signedOut('Your account was deleted.');
          },
        }),
        { label: 'Log out', hint: `@${me.username}`, onSelect: () => this.logout() },
      ],
      { label: 'Account' },
    );
  }

  toggleMembers(force, focus = true) {
    const panel = $('members');
    const open = force ?? panel.hidden;
    panel.hidden = !open;
    $('members-toggle').setAttribute('aria-expanded', String(open));
    document.body.classList.toggle('members-open', open);
    localStorage.setItem(MEMBERS_OPEN_KEY, open ? '1' : '0');
    if (open) {
      this.members.render();
      if (focus) $('members-close').focus();
    } else if (focus) $('members-toggle').focus();
  }

  toggleNav(force) {
    const open = force ?? !document.body.classList.contains('nav-open');
    document.body.classList.toggle('nav-open', open);
    $('scrim').hidden = !open;
    $('menu-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('sidebar').querySelector('a.room-link.active, a.room-link, button')?.focus();
  }

  // -- keyboard ------------------------------------------------------------------

  onKey(event) {
    if ($('dialog').open) return;
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'k') {
      // Ctrl+K / Cmd+K: search messages.
      event.preventDefault();
      this.search();
      return;
    }
    if (event.altKey && (event.key === 'ArrowUp' || event.key === 'ArrowDown')) {
      // Alt+Up / Alt+Down: previous / next room, in sidebar order.
      event.preventDefault();
      const links = [...document.querySelectorAll('#sidebar a.room-link')];
      const i = links.findIndex((a) => a.classList.contains('active'));
      const next = links[(i + (event.key === 'ArrowUp' ? -1 : 1) + links.length) % links.length];
      if (next) this.go(next.dataset.roomId);
    } else if (event.key === 'Escape') {
      if (document.body.classList.contains('nav-open')) this.toggleNav(false);
      else if (!$('members').hidden && $('members').contains(document.activeElement)) this.toggleMembers(false);
    }
  }

  // -- banner, toasts, announcements ------------------------------------------------

  renderBanner() {
    const { state, info, everLive } = this.store.conn;
    const banner = $('banner');
    const status = $('conn-status');
    status.textContent = state === 'live' ? 'Connected' : state === 'waiting' ? 'Offline' : 'Connecting…';
    status.className = `conn-status ${state}`;
    clearInterval(this.bannerTick);
    if (state === 'live') {
      clearTimeout(this.bannerTimer);
      this.bannerTimer = null;
      if (!banner.hidden) {
        banner.hidden = true;
        this.announce('Reconnected.');
      }
      document.body.classList.remove('offline');
      return;
    }
    if (!everLive && state !== 'waiting') return;
    const show = () => {
      const { state, info } = this.store.conn;
      if (state === 'live') return;
      const fill = () => {
        const left = Math.ceil(((info.retryAt || 0) - Date.now()) / 1000);
        const text =
          this.store.conn.state === 'waiting' && left > 0
            ? `Connection lost. Reconnecting in ${left} s…`
            : 'Reconnecting…';
        const retry = h('button', { type: 'button', class: 'link-btn', onclick: () => this.client.socket.connectNow() }, 'Retry now');
        banner.replaceChildren(h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', null, text), state === 'waiting' ? retry : '');
      };
      fill();
      banner.hidden = false;
      document.body.classList.add('offline');
      if (state === 'waiting') this.bannerTick = setInterval(fill, 1000);
    };
    if (banner.hidden) {
      if (!this.bannerTimer) {
        this.bannerTimer = setTimeout(() => {
          this.bannerTimer = null;
          if (this.store.conn.state !== 'live') show();
        }, BANNER_DELAY_MS);
      }
    } else show();
  }

  toast(text, kind = 'info') {
    const box = $('toasts');
    const el = h('div', { class: `toast ${kind}` }, text);
    box.append(el);
    setTimeout(() => el.remove(), kind === 'error' ? 7000 : 4000);
  }

  announce(text) {
    const el = $('announcer');
    el.textContent = '';
    // A fresh text node in a separate task is announced even when it repeats.
    setTimeout(() => {
      el.textContent = text;
    }, 50);
  }
}

const app = new App();
app.init().catch((err) => {
  const boot = $('boot');
  boot.hidden = false;
  boot.querySelector('span').textContent = `Parley could not start: ${err?.message || err}`;
});
