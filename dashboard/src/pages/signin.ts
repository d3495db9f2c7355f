import { verifyKey } from '../api.js';
import type { Page } from '../app.js';
import { h } from '../dom.js';

/** Sign-in with the service key: checked against an admin endpoint before it is kept. */
export function signInPage(options: { message?: string | undefined; onSignedIn(key: string): void }): Page {
  const input = h('input', {
    type: 'password',
    name: 'service-key',
    id: 'service-key',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    placeholder: 'bsk_…',
  });
  const error = h('p', { class: 'error-text', role: 'alert', id: 'signin-error' }, options.message ?? '');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'signin-form',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        button.disabled = true;
        error.textContent = '';
        try {
          await verifyKey(key);
          options.onSignedIn(key);
        } catch (failure) {
          error.textContent = failure instanceof Error ? failure.message : String(failure);
          button.disabled = false;
          input.select();
        }
      },
    },
    h('label', { for: 'service-key' }, 'Service key'),
    input,
    button,
    error,
  );
  const element = h(
    'div',
    { class: 'signin' },
    h(
      'div',
      { class: 'card signin-card' },
      h('h1', null, h('img', { src: '/_/favicon.svg', alt: '' }), 'Basalt dashboard'),
      h(
        'p',
        { class: 'muted' },
        'Sign in with the service key (BASALT_SERVICE_KEY, or the key printed at start). It is kept in this tab only (session storage) and sent as a Bearer header.',
      ),
      form,
    ),
  );
  queueMicrotask(() => input.focus());
  return { element };
}
