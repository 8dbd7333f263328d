// The account's own settings, in the user menu: display name, account deletion,
// and, for server admins, the admin page.

import { formDialog } from './dialogs.js';
import { openAdmin } from './admin.js';

/**
 * Menu items for the signed-in user. `onRenamed(user)` updates the page;
 * `onDeleted()` signs out.
 */
export function accountItems({ api, me, toast, onRenamed, onDeleted }) {
  const items = [
    {
      label: 'Change display name',
      onSelect: () =>
        formDialog({
          title: 'Display name',
          fields: [{ name: 'display_name', label: 'Display name', value: me.display_name, maxlength: 64, required: true }],
          onSubmit: async ({ display_name: name }) => {
            const user = await api.request('PATCH', '/users/me', { json: { display_name: name.trim() } });
            onRenamed(user);
          },
        }),
    },
    {
      label: 'Delete account',
      onSelect: () =>
        formDialog({
          title: 'Delete your account',
          description:
            'Your account ends and your username becomes free. Messages you sent stay, shown as from “Deleted user”. This cannot be undone.',
          fields: [{ name: 'password', label: 'Your password', type: 'password', required: true }],
          submitLabel: 'Delete account',
          onSubmit: async ({ password }) => {
            await api.request('DELETE', '/users/me', { json: { password } });
            return onDeleted;
          },
        }),
    },
  ];
  if (me.is_admin) items.unshift({ label: 'Server admin', onSelect: () => openAdmin({ api, toast }) });
  items[items.length - 1].danger = true;
  return items;
}
