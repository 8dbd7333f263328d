// Modal dialogs on the page's one <dialog>: forms, confirmations, the room
// directory. showModal() gives focus trapping and Escape; focus returns to
// whatever had it before the dialog opened.

import { clear, h } from '../util.js';

const dialog = () => document.getElementById('dialog');
let returnFocus = null;
let onClosed = null;

export function showDialog(titleText, content, { labelledBy = 'dialog-title', className = '' } = {}) {
  const d = dialog();
  if (d.open) d.close();
  returnFocus = document.activeElement;
  clear(d);
  d.className = `dialog ${className}`;
  d.setAttribute('aria-labelledby', labelledBy);
  d.append(
    h(
      'div',
      { class: 'dialog-head' },
      h('h2', { id: 'dialog-title' }, titleText),
      h(
        'button',
        { type: 'button', class: 'icon-btn', 'aria-label': 'Close', onclick: () => closeDialog() },
        svgClose(),
      ),
    ),
    content,
  );
  d.onclose = () => {
    const done = onClosed;
    onClosed = null;
    done?.();
    const target = returnFocus;
    returnFocus = null;
    // Give focus back, unless the action that closed the dialog moved it on
    // (e.g. to the message box of the room just opened).
    const active = document.activeElement;
    const free = !active || active === document.body || d.contains(active);
    if (free && target?.isConnected) target.focus();
  };
  d.showModal();
  return d;
}

export function closeDialog() {
  const d = dialog();
  if (d.open) d.close();
}

function svgClose() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M5 5l10 10M15 5L5 15');
  svg.append(path);
  return svg;
}

/**
 * A form in a dialog. `onSubmit(values)` may throw: its message is shown in the
 * form and the dialog stays open; otherwise the dialog closes. If it returns a
 * function, that runs once the dialog is closed (the page is inert until then,
 * so that is where focus can move on, e.g. to the room just created).
 */
export function formDialog({ title, description, fields, submitLabel = 'Save', onSubmit }) {
  const error = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
  const controls = fields.map((f) => field(f));
  const form = h(
    'form',
    { class: 'dialog-form', novalidate: true },
    description ? h('p', { class: 'dialog-desc' }, description) : null,
    controls,
    error,
    h(
      'div',
      { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => closeDialog() }, 'Cancel'),
      submit,
    ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    error.textContent = '';
    submit.disabled = true;
    try {
      const then = await onSubmit(values);
      closeDialog();
      if (typeof then === 'function') then();
    } catch (err) {
      error.textContent = err?.message || 'Something went wrong.';
    } finally {
      submit.disabled = false;
    }
  });
  showDialog(title, form);
  form.querySelector('input, textarea, select')?.focus();
}

function field(f) {
  const id = `f-${f.name}`;
  if (f.type === 'radio') {
    return h(
      'fieldset',
      { class: 'field radio-group' },
      h('legend', null, f.label),
      f.options.map((o) =>
        h(
          'label',
          { class: 'radio' },
          h('input', { type: 'radio', name: f.name, value: o.value, checked: o.value === f.value }),
          h('span', null, h('strong', null, o.label), o.hint ? h('small', null, o.hint) : null),
        ),
      ),
    );
  }
  const input = h(f.type === 'textarea' ? 'textarea' : 'input', {
    id,
    name: f.name,
    type: f.type === 'textarea' ? null : f.type || 'text',
    required: Boolean(f.required),
    maxlength: f.maxlength ? String(f.maxlength) : null,
    placeholder: f.placeholder || null,
    autocomplete: 'off',
    autocapitalize: f.autocapitalize || null,
    spellcheck: f.spellcheck === false ? 'false' : null,
  });
  if (f.value) input.value = f.value;
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, f.label),
    input,
    f.hint ? h('small', { class: 'muted' }, f.hint) : null,
  );
}

/** Ask a yes/no question; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel = 'OK', danger = false }) {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h(
      'button',
      {
        type: 'button',
        class: `btn ${danger ? 'btn-danger' : 'btn-primary'}`,
        onclick: () => {
          answer = true;
          closeDialog();
        },
      },
      confirmLabel,
    );
    const content = h(
      'div',
      { class: 'dialog-form' },
      typeof message === 'string' ? h('p', { class: 'dialog-desc' }, message) : message,
      h(
        'div',
        { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => closeDialog() }, 'Cancel'),
        yes,
      ),
    );
    showDialog(title, content);
    onClosed = () => resolve(answer);
    yes.focus();
  });
}

/** The public room directory: filter, join, open. */
export async function browseDialog({ client, onOpen, onError }) {
  const filter = h('input', {
    type: 'search',
    id: 'browse-filter',
    placeholder: 'Filter rooms',
    'aria-label': 'Filter rooms',
    autocomplete: 'off',
  });
  const list = h('ul', { class: 'browse-list', 'aria-label': 'Public rooms' });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  showDialog('Browse rooms', h('div', { class: 'dialog-form' }, filter, status, list), {
    className: 'dialog-wide',
  });
  filter.focus();
  let rooms = [];
  try {
    rooms = (await client.api.publicRooms()).rooms || [];
  } catch (err) {
    status.textContent = err?.message || 'Could not load the room directory.';
    return;
  }
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = rooms.filter(
      (r) => !q || r.name.toLowerCase().includes(q) || (r.topic || '').toLowerCase().includes(q),
    );
    clear(list);
    status.textContent = shown.length
      ? `${shown.length} room${shown.length === 1 ? '' : 's'}`
      : rooms.length
        ? 'No rooms match.'
        : 'There are no public rooms yet.';
    for (const room of shown) {
      const member = client.store.rooms.has(room.id);
      const button = h(
        'button',
        {
          type: 'button',
          class: member ? 'btn' : 'btn btn-primary',
          'aria-label': `${member ? 'Open' : 'Join'} ${room.name}`,
          onclick: async () => {
            button.disabled = true;
            try {
              const r = member ? client.store.rooms.get(room.id) : await client.joinRoom(room.id);
              closeDialog();
              onOpen(r);
            } catch (err) {
              button.disabled = false;
              onError(err);
            }
          },
        },
        member ? 'Open' : 'Join',
      );
      list.append(
        h(
          'li',
          { class: 'browse-item' },
          h(
            'div',
            { class: 'browse-text' },
            h('strong', null, `# ${room.name}`),
            room.topic ? h('span', { class: 'muted' }, room.topic) : null,
          ),
          button,
        ),
      );
    }
  };
  filter.addEventListener('input', render);
  render();
}

