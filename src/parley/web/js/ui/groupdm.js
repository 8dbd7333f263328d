// Starting a group direct message: pick 2 to 9 people by username. One room per
// set of people: picking the same people again opens the same conversation.

import { formDialog } from './dialogs.js';

export function groupDmDialog({ client, onOpen }) {
  formDialog({
    title: 'New group message',
    description: 'Pick 2 to 9 people. The same people again open the same conversation.',
    submitLabel: 'Start',
    fields: [
      {
        name: 'usernames',
        label: 'Usernames',
        required: true,
        maxlength: 400,
        placeholder: 'e.g. alice, bob, carol',
        autocapitalize: 'none',
        spellcheck: false,
      },
    ],
    onSubmit: async ({ usernames }) => {
      const names = usernames.split(/[\s,]+/).filter(Boolean);
      if (names.length < 2) throw new Error('Name at least two people, separated by commas or spaces.');
      const r = await client.openGroupDm(names);
      return () => onOpen(r);
    },
  });
}
