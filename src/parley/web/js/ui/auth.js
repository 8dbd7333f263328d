// The sign-in / create-account page (static markup in index.html).

const USERNAME = /^[a-z0-9_.-]{3,32}$/;

const MESSAGES = {
  invalid_grant: 'Wrong username or password.',
  username_taken: 'That username is taken. Try another one.',
  invalid_username: 'Usernames are 3–32 lowercase letters, digits, “_”, “.” or “-”.',
  invalid_password: 'Passwords are 8 to 256 characters.',
  registration_closed: 'This server is not taking new accounts.',
  invite_required: 'This server needs an invite code to sign up.',
  invalid_invite: 'That invite code is unknown, expired or used up.',
  account_deactivated: 'An admin deactivated this account.',
  network: 'Cannot reach the server. Check your connection and try again.',
};

/**
 * Wire the auth form. `onSignedIn()` runs after a successful login.
 * @returns {{show: (message?: string) => void, hide: () => void}}
 */
export function setupAuth({ api, onSignedIn }) {
  const root = document.getElementById('auth');
  const form = document.getElementById('auth-form');
  const tabLogin = document.getElementById('tab-login');
  const tabRegister = document.getElementById('tab-register');
  const username = document.getElementById('auth-username');
  const display = document.getElementById('auth-display');
  const password = document.getElementById('auth-password');
  const registerOnly = form.querySelector('.field-register');
  const inviteField = form.querySelector('.field-invite');
  const invite = document.getElementById('auth-invite');
  const hint = document.getElementById('auth-hint');
  const error = document.getElementById('auth-error');
  const submit = document.getElementById('auth-submit');
  let mode = 'login';

  const setMode = (next, focus = true) => {
    mode = next;
    const login = mode === 'login';
    tabLogin.setAttribute('aria-selected', String(login));
    tabRegister.setAttribute('aria-selected', String(!login));
    tabLogin.tabIndex = login ? 0 : -1;
    tabRegister.tabIndex = login ? -1 : 0;
    form.setAttribute('aria-labelledby', login ? 'tab-login' : 'tab-register');
    registerOnly.hidden = login;
    hint.hidden = login;
    password.autocomplete = login ? 'current-password' : 'new-password';
    submit.textContent = login ? 'Sign in' : 'Create account';
    error.textContent = '';
    if (focus) (login ? tabLogin : tabRegister).focus();
    if (!login) {
      // The invite field only where the server asks for one.
      api.registrationMode().then(
        (registration) => {
          inviteField.hidden = registration !== 'invite';
          if (registration === 'closed') error.textContent = MESSAGES.registration_closed;
        },
        () => {},
      );
    }
  };
  tabLogin.addEventListener('click', () => setMode('login'));
  tabRegister.addEventListener('click', () => setMode('register'));
  // Arrow keys move between tabs (WAI-ARIA tabs pattern).
  for (const tab of [tabLogin, tabRegister]) {
    tab.addEventListener('keydown', (event) => {
      if (event.key === 'ArrowLeft' || event.key === 'ArrowRight') {
        event.preventDefault();
        setMode(mode === 'login' ? 'register' : 'login');
      }
    });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const name = username.value.trim().toLowerCase();
    const pass = password.value;
    if (!USERNAME.test(name)) {
      error.textContent = MESSAGES.invalid_username;
      username.focus();
      return;
    }
    if (pass.length < 8) {
      error.textContent = mode === 'login' ? 'Enter your password.' : MESSAGES.invalid_password;
      password.focus();
      return;
    }
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    try {
      if (mode === 'register') {
        await api.register(name, pass, display.value.trim() || undefined, invite.value.trim() || undefined);
      }
      await api.login(name, pass);
      password.value = '';
      await onSignedIn();
    } catch (err) {
      let text = MESSAGES[err?.code] || err?.message || 'Something went wrong.';
      if (err?.status === 429) {
        text = `Too many attempts. Try again in ${err.retryAfter || 60} seconds.`;
      }
      error.textContent = text;
      (err?.code === 'invalid_grant' ? password : username).focus();
    } finally {
      submit.disabled = false;
      submit.removeAttribute('aria-busy');
    }
  });

  return {
    show(message = '') {
      root.hidden = false;
      setMode('login', false);
      error.textContent = message;
      username.focus();
    },
    hide() {
      root.hidden = true;
    },
  };
}
