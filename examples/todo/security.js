// The security page of the example: the session's assurance level, a second-factor
// challenge after a sign-in that said mfa_required, an authenticator app (TOTP, with its QR
// code and recovery codes) and passkeys. Plain JavaScript on the Basalt SDK build.
import { createClient } from '/sdk/index.js';
import { BASALT_URL } from '/config.js';

const basalt = createClient(BASALT_URL);
const $ = (selector) => document.querySelector(selector);

function showError(error) {
  const box = $('#error');
  box.textContent = error ? (error.message ?? String(error)) : '';
  box.hidden = !error;
}

/** Runs an action of the page, showing its failure instead of throwing. */
async function attempt(action) {
  showError(null);
  try {
    await action();
  } catch (error) {
    showError(error);
  }
  await render();
}

function item(text, onRemove) {
  const li = document.createElement('li');
  li.className = 'row';
  const label = document.createElement('span');
  label.textContent = text;
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'secondary';
  remove.textContent = 'Remove';
  remove.addEventListener('click', () => attempt(onRemove));
  li.append(label, remove);
  return li;
}

async function render() {
  await basalt.auth.ready;
  const signedIn = basalt.auth.session !== null && !basalt.auth.user?.is_anonymous;
  const sections = ['#level', '#totp', '#passkeys'];
  $('#signed-out').hidden = signedIn;
  if (!signedIn) {
    for (const id of sections) $(id).hidden = true;
    return;
  }
  const aal = basalt.auth.aal;
  const [{ factors }, passkeys] = await Promise.all([basalt.auth.mfa.factors(), basalt.auth.passkeys.list()]);
  // The whole state at once, after the reads: what is shown never mixes two states.
  for (const id of sections) $(id).hidden = false;
  $('#aal').textContent = aal === 'aal2' ? 'aal2 (second factor verified)' : 'aal1 (password only)';
  const verified = factors.filter((factor) => factor.status === 'verified');
  $('#challenge').hidden = aal === 'aal2' || verified.length === 0;
  $('#factors').replaceChildren(
    ...verified.map((factor) =>
      item(
        `${factor.friendly_name ?? 'Authenticator app'} · added ${new Date(factor.created_at).toLocaleDateString()}`,
        () => basalt.auth.mfa.remove(factor.id),
      ),
    ),
  );
  $('#passkey-list').replaceChildren(
    ...passkeys.map((passkey) =>
      item(`${passkey.name ?? 'Passkey'} · ${passkey.device_type}`, () => basalt.auth.passkeys.remove(passkey.id)),
    ),
  );
}

let enrolling = null;

$('#enroll').addEventListener('click', () =>
  attempt(async () => {
    enrolling = await basalt.auth.mfa.enrollTotp({ friendlyName: 'Authenticator app' });
    $('#qr').src = enrolling.qr_code;
    $('#secret').textContent = enrolling.secret;
    $('#enrollment').hidden = false;
    $('#recovery').hidden = true;
  }),
);

$('#enrollment').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt(async () => {
    const { recovery_codes: codes } = await basalt.auth.mfa.verify({
      factorId: enrolling.factor_id,
      code: $('#enroll-code').value.trim(),
    });
    $('#enrollment').hidden = true;
    $('#recovery-codes').textContent = codes.join('\n');
    $('#recovery').hidden = false;
  });
});

$('#challenge').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt(async () => {
    const code = $('#challenge-code').value.trim();
    if (/^[0-9]{6}$/.test(code)) {
      const { factors } = await basalt.auth.mfa.factors();
      const factor = factors.find((candidate) => candidate.status === 'verified');
      await basalt.auth.mfa.challenge({ factorId: factor.id, code });
    } else {
      await basalt.auth.mfa.challenge({ recoveryCode: code });
    }
    $('#challenge-code').value = '';
  });
});

$('#add-passkey').addEventListener('click', () =>
  attempt(() => basalt.auth.passkeys.register({ name: 'This device' })),
);

basalt.auth.onAuthStateChange(() => void render().catch(showError));
render().catch(showError);
