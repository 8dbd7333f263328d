// The admin page (server admins only): accounts with deactivate / reactivate,
// the registration mode, invites, and the newest audit entries. A wide dialog
// over the chat, so that the chat keeps running behind it.

import { clear, h } from '../util.js';
import { showDialog } from './dialogs.js';

const ADMIN = '/admin';
const MODES = [
  ['open', 'Open: anyone can sign up'],
  ['invite', 'Invite only: a code from an admin'],
  ['closed', 'Closed: no one can sign up'],
];

/** Open the admin page. `toast(text, kind)` reports errors. */
export function openAdmin({ api, toast }) {
  const report = (err) => toast(err?.message || 'Something went wrong.', 'error');
  const page = h(
    'div',
    { class: 'dialog-form admin-page' },
    usersSection(api, report),
    registrationSection(api, report),
    invitesSection(api, report),
    auditSection(api, report),
  );
  showDialog('Server admin', page, { className: 'dialog-wide' });
}

function section(title, ...children) {
  const id = `admin-heading-${title.toLowerCase().replace(/\W+/g, '-')}`;
  return h('section', { class: 'admin-section', 'aria-labelledby': id }, h('h3', { id }, title), children);
}

function usersSection(api, report) {
  const search = h('input', {
    type: 'search',
    id: 'admin-user-search',
    placeholder: 'Username starts with…',
    'aria-label': 'Find users',
    autocomplete: 'off',
  });
  const list = h('ul', { class: 'browse-list admin-users', 'aria-label': 'Users' });
  const load = async () => {
    const prefix = search.value.trim().toLowerCase().replace(/[^a-z0-9_.-]/g, '');
    try {
      const answer = await api.get(`${ADMIN}/users?limit=50&prefix=${encodeURIComponent(prefix)}`);
      clear(list);
      for (const user of answer.users) list.append(userRow(api, user, report, load));
      if (!answer.users.length) list.append(h('li', { class: 'muted' }, 'No users match.'));
    } catch (err) {
      report(err);
    }
  };
  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(load, 200);
  });
  load();
  return section('Users', search, list);
}

function userRow(api, user, report, reload) {
  const action = user.deactivated ? 'reactivate' : 'deactivate';
  const label = user.deactivated ? 'Reactivate' : 'Deactivate';
  const button = h(
    'button',
    {
      type: 'button',
      class: user.deactivated ? 'btn' : 'btn btn-danger',
      'aria-label': `${label} ${user.username}`,
      onclick: async () => {
        button.disabled = true;
        try {
          await api.request('POST', `${ADMIN}/users/${encodeURIComponent(user.id)}/${action}`);
          await reload();
        } catch (err) {
          button.disabled = false;
          report(err);
        }
      },
    },
    label,
  );
  const tags = [user.is_admin ? 'admin' : null, user.deactivated ? 'deactivated' : null].filter(Boolean);
  return h(
    'li',
    { class: 'browse-item', dataset: { username: user.username } },
    h(
      'div',
      { class: 'browse-text' },
      h('strong', null, user.display_name),
      h('span', { class: 'muted' }, `@${user.username}${tags.length ? ` · ${tags.join(', ')}` : ''}`),
    ),
    button,
  );
}

function registrationSection(api, report) {
  const select = h(
    'select',
    { id: 'admin-registration', 'aria-label': 'Registration mode' },
    MODES.map(([value, text]) => h('option', { value }, text)),
  );
  api
    .get(`${ADMIN}/registration`)
    .then((answer) => {
      select.value = answer.mode;
    })
    .catch(report);
  select.addEventListener('change', async () => {
    try {
      await api.request('PUT', `${ADMIN}/registration`, { json: { mode: select.value } });
    } catch (err) {
      report(err);
    }
  });
  return section('Registration', select);
}

function invitesSection(api, report) {
  const uses = h('input', { type: 'number', id: 'admin-invite-uses', min: '1', max: '10000', value: '1' });
  const days = h('input', { type: 'number', id: 'admin-invite-days', min: '1', max: '365', value: '7' });
  const code = h('output', { id: 'admin-invite-code', class: 'admin-code', 'aria-live': 'polite' });
  const list = h('ul', { class: 'admin-invites', 'aria-label': 'Invites' });
  const load = async () => {
    try {
      const { invites } = await api.get(`${ADMIN}/invites`);
      clear(list);
      for (const invite of invites.slice(0, 10)) {
        const limit = invite.max_uses ?? 'any';
        const until = invite.expires_at ? new Date(invite.expires_at).toLocaleString() : 'never';
        list.append(h('li', { class: 'muted' }, `used ${invite.uses}/${limit} · expires ${until}`));
      }
    } catch (err) {
      report(err);
    }
  };
  const create = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-primary',
      onclick: async () => {
        const json = {};
        if (uses.value) json.max_uses = Number(uses.value);
        if (days.value) json.expires_in = Math.round(Number(days.value) * 86400);
        try {
          const made = await api.request('POST', `${ADMIN}/invites`, { json });
          code.textContent = made.code;
          await load();
        } catch (err) {
          report(err);
        }
      },
    },
    'Create invite',
  );
  load();
  return section(
    'Invites',
    h(
      'div',
      { class: 'admin-row' },
      h('label', { for: 'admin-invite-uses' }, 'Uses'),
      uses,
      h('label', { for: 'admin-invite-days' }, 'Days'),
      days,
      create,
    ),
    code,
    list,
  );
}

function auditSection(api, report) {
  const list = h('ol', { class: 'admin-audit', 'aria-label': 'Audit log, newest first' });
  api
    .get(`${ADMIN}/audit?before=9007199254740991&limit=50`)
    .then(({ entries }) => {
      for (const entry of entries.reverse()) {
        const who = entry.actor_id ? entry.actor_id.slice(0, 8) : 'system';
        const target = entry.target.user_id ? ` → ${entry.target.user_id.slice(0, 8)}` : '';
        list.append(
          h(
            'li',
            { dataset: { action: entry.action } },
            h('time', { datetime: entry.at }, new Date(entry.at).toLocaleString()),
            ` ${entry.action} by ${who}${target}${entry.ip ? ` from ${entry.ip}` : ''}`,
          ),
        );
      }
    })
    .catch(report);
  return section('Audit log', list);
}
