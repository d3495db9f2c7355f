// Shared todos: a live list everyone signed in shares, with photos. Plain JavaScript on the
// Basalt SDK build; no framework. The static server provides /sdk/index.js and /config.js.
import { createClient } from '/sdk/index.js';
import { BASALT_URL } from '/config.js';

const COLLECTION = 'example_todos';
const BUCKET = 'example-images';
const MAX_IMAGE_BYTES = 5 * 1024 * 1024;
const IMAGE_TYPES = {
  'image/png': 'png',
  'image/jpeg': 'jpg',
  'image/gif': 'gif',
  'image/webp': 'webp',
  'image/avif': 'avif',
};

/**
 * "View as this user" from the Basalt dashboard opens this page with a session an admin
 * started as a user in the fragment (`#access_token=…&type=impersonation`). That session has
 * no refresh token and ends on its own; it is kept in this tab's memory only, so it neither
 * replaces the session stored for this origin (the admin's own sign-in here) nor reaches
 * other tabs. The fragment is removed from the address bar at once.
 */
async function viewAsFromUrl() {
  const params = new window.URLSearchParams(window.location.hash.slice(1));
  const accessToken = params.get('access_token');
  if (params.get('type') !== 'impersonation' || !accessToken) return null;
  window.history.replaceState(null, '', window.location.href.split('#')[0]);
  const answer = await window.fetch(`${BASALT_URL}/v1/auth/user`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  if (!answer.ok) return null;
  const session = {
    access_token: accessToken,
    token_type: 'bearer',
    expires_in: Number(params.get('expires_in') ?? 0),
    expires_at: Number(params.get('expires_at') ?? 0),
    refresh_token: '',
  };
  return { session, user: await answer.json() };
}

function memoryStorage(initial) {
  const items = new Map(Object.entries(initial));
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

const VIEW_AS_KEY = 'basalt.example.view-as';
const viewAs = await viewAsFromUrl();
const basalt = viewAs
  ? createClient(BASALT_URL, {
      storage: memoryStorage({ [VIEW_AS_KEY]: JSON.stringify({ ...viewAs, seq: Date.now() }) }),
      storageKey: VIEW_AS_KEY,
      syncTabs: false,
      autoRefreshToken: false,
      detectSessionInUrl: false,
    })
  : // Offline-first: the list and the session are kept in this browser (IndexedDB), so the
    // page opens and takes changes with the network or the server gone; they are sent when it
    // is back. (Not for "view as": that session is another user's, and must not touch this cache.)
    createClient(BASALT_URL, { offline: { persistence: 'indexeddb' } });
const todos = basalt.db.collection(COLLECTION);
const images = basalt.storage.from(BUCKET);
/** How photos are shown in the list: WebP, 480 px wide at most (twice the CSS width, for sharp screens). */
const THUMBNAIL = { width: 480, height: 480, fit: 'inside', format: 'webp', quality: 75 };

const $ = (selector, root = document) => root.querySelector(selector);
const view = {
  loading: $('#loading'),
  auth: $('#auth'),
  authForm: $('#auth-form'),
  authError: $('#auth-error'),
  board: $('#board'),
  me: $('#me'),
  meAvatar: $('#me-avatar'),
  meName: $('#me-name'),
  newItem: $('#new-item'),
  newTitle: $('#new-title'),
  items: $('#items'),
  empty: $('#empty'),
  count: $('#count'),
  live: $('#live'),
  pending: $('#pending'),
  toast: $('#toast'),
  template: $('#item-template'),
};

/** The live query's stop function while signed in. */
let stopLive = null;
/** Items whose title is being edited: their input is left alone when a snapshot arrives. */
const editing = new Set();
/** Items with an upload in flight → { sent, total }. */
const uploads = new Map();
/** The latest snapshot's documents by id. */
let current = new Map();

// ---- small helpers -------------------------------------------------------------------

let toastTimer = null;
function toast(message) {
  view.toast.textContent = message;
  view.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (view.toast.hidden = true), 5000);
}

function messageOf(error) {
  return error && typeof error.message === 'string' ? error.message : String(error);
}

function displayName(user) {
  const name = user?.user_metadata?.name;
  if (typeof name === 'string' && name.trim()) return name.trim().slice(0, 80);
  if (user?.email) return user.email.split('@')[0].slice(0, 80);
  return 'Guest';
}

/** A stable colour per user, so the same person has the same avatar everywhere. */
function avatarColour(id) {
  let hash = 0;
  for (const char of id ?? '') hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

function paintAvatar(element, ownerId, name) {
  element.textContent = (name || '?').trim().charAt(0).toUpperCase() || '?';
  element.style.backgroundColor = avatarColour(ownerId);
  element.title = name || '';
}

function me() {
  return basalt.auth.user;
}

// ---- signed in / signed out ----------------------------------------------------------

function showSignedOut() {
  stopLive?.();
  stopLive = null;
  current = new Map();
  editing.clear();
  view.items.replaceChildren();
  view.loading.hidden = true;
  view.board.hidden = true;
  view.me.hidden = true;
  view.auth.hidden = false;
  document.body.dataset.state = 'signed-out';
}

function showSignedIn(user) {
  view.loading.hidden = true;
  view.auth.hidden = true;
  view.authError.hidden = true;
  view.board.hidden = false;
  view.me.hidden = false;
  view.meName.textContent = displayName(user) + (user.is_anonymous ? ' (guest)' : '');
  if (viewAs) {
    const until = new Date(viewAs.session.expires_at * 1000).toLocaleTimeString();
    view.meName.textContent += ` — viewed by an admin until ${until}`;
    document.body.dataset.viewAs = 'true';
  }
  paintAvatar(view.meAvatar, user.id, displayName(user));
  document.body.dataset.state = 'signed-in';
  if (!stopLive) startLive();
}

function startLive() {
  setLive('connecting');
  // Oldest first, so new items appear at the bottom like a list being written.
  stopLive = todos
    .orderBy('created_at', 'asc')
    .limit(200)
    .onSnapshot(
      (snapshot) => {
        // From the cache: the server is out of reach, and the list is this browser's copy.
        setLive(snapshot.fromCache ? 'offline' : 'live');
        showPending(snapshot.hasPendingWrites);
        render(snapshot.docs);
      },
      (error) => {
        stopLive = null;
        setLive('stopped');
        toast(`The live list stopped: ${messageOf(error)}`);
      },
    );
}

function setLive(state) {
  view.live.dataset.state = state;
  view.live.textContent = {
    connecting: 'connecting…',
    live: '● live',
    offline: '○ offline',
    stopped: 'not live',
  }[state];
  view.live.title = state === 'offline' ? 'Changes are kept here and sent when the connection is back.' : '';
}

/** How many changes wait to be sent, while some do. */
function showPending(hasPendingWrites) {
  const waiting = hasPendingWrites ? basalt.db.pendingWrites() : 0;
  view.pending.hidden = waiting === 0;
  view.pending.textContent = waiting === 1 ? '1 change to send' : `${waiting} changes to send`;
}

// A change made offline that the server refused once it was back (say, an item someone else
// deleted meanwhile): the list has already put it back as the server has it.
basalt.db.onWriteError((error) => toast(`A change was not saved: ${messageOf(error)}`));

basalt.auth.onAuthStateChange((event) => {
  if (event === 'SIGNED_OUT') showSignedOut();
  else if (me()) showSignedIn(me());
});

// ---- the list ------------------------------------------------------------------------

function render(docs) {
  current = new Map(docs.map((doc) => [doc.id, doc]));
  const existing = new Map([...view.items.children].map((li) => [li.dataset.id, li]));
  let previous = null;
  for (const doc of docs) {
    let li = existing.get(doc.id);
    existing.delete(doc.id);
    if (!li) li = createItem(doc.id);
    updateItem(li, doc);
    // Keep the DOM in the query's order, moving only what is out of place.
    const expected = previous ? previous.nextSibling : view.items.firstChild;
    if (li !== expected) view.items.insertBefore(li, expected);
    previous = li;
  }
  for (const [id, li] of existing) {
    editing.delete(id);
    li.remove();
  }
  view.empty.hidden = docs.length > 0;
  const open = docs.filter((doc) => !doc.data.done).length;
  view.count.textContent = docs.length ? `· ${open} open of ${docs.length}` : '';
}

function createItem(id) {
  const li = view.template.content.firstElementChild.cloneNode(true);
  li.dataset.id = id;
  $('.done', li).addEventListener('change', (event) => {
    update(id, { done: event.target.checked });
  });
  $('.edit', li).addEventListener('click', () => startEditing(li, id));
  $('.title', li).addEventListener('dblclick', () => {
    if (current.get(id)?.owner === me()?.id) startEditing(li, id);
  });
  $('.delete', li).addEventListener('click', () => remove(id));
  const img = $('.photo', li);
  img.addEventListener('error', () => {
    if (!img.getAttribute('src')) return;
    img.hidden = true;
    $('.photo-missing', li).hidden = false;
  });
  $('.attach-input', li).addEventListener('change', (event) => {
    const file = event.target.files?.[0];
    event.target.value = '';
    if (file) attachImage(li, id, file);
  });
  return li;
}

function updateItem(li, doc) {
  const mine = doc.owner === me()?.id;
  li.dataset.version = String(doc.version);
  li.classList.toggle('is-done', doc.data.done === true);
  li.classList.toggle('is-mine', mine);
  const done = $('.done', li);
  done.checked = doc.data.done === true;
  done.disabled = !mine;
  if (!editing.has(doc.id)) $('.title', li).textContent = doc.data.title;
  const author = doc.data.author || 'someone';
  $('.meta', li).textContent = mine ? 'you' : author;
  paintAvatar($('.avatar', li), doc.owner, author);
  $('.actions', li).hidden = !mine;
  const img = $('.photo', li);
  if (doc.data.image) {
    // A thumbnail made by the server (and cached there), not the full photo: a phone
    // picture is megabytes, the list shows it a few hundred pixels wide.
    const src = images.getPublicUrl(doc.data.image, { transform: THUMBNAIL });
    if (img.getAttribute('src') !== src) {
      img.src = src;
      img.hidden = false;
      $('.photo-missing', li).hidden = true;
    }
    img.alt = `Photo for “${doc.data.title}”`;
  } else {
    img.removeAttribute('src');
    img.hidden = true;
    $('.photo-missing', li).hidden = true;
  }
}

function startEditing(li, id) {
  if (editing.has(id)) return;
  const doc = current.get(id);
  if (!doc) return;
  editing.add(id);
  const title = $('.title', li);
  const input = document.createElement('input');
  input.className = 'title-input';
  input.maxLength = 200;
  input.value = doc.data.title;
  title.replaceChildren(input);
  input.focus();
  input.select();
  let finished = false;
  const finish = (save) => {
    if (finished) return;
    finished = true;
    editing.delete(id);
    const value = input.value.trim();
    const latest = current.get(id);
    title.textContent = latest ? latest.data.title : doc.data.title;
    if (save && value && value !== doc.data.title) {
      title.textContent = value;
      update(id, { title: value });
    }
  };
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') finish(true);
    if (event.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
}

// ---- writes --------------------------------------------------------------------------

async function add(title) {
  const user = me();
  try {
    await todos.add({ title, done: false, author: displayName(user) });
  } catch (error) {
    toast(`Could not add: ${messageOf(error)}`);
  }
}

async function update(id, patch) {
  try {
    await todos.doc(id).update(patch);
  } catch (error) {
    toast(`Could not save: ${messageOf(error)}`);
    // Put the list back as the server has it.
    const doc = current.get(id);
    const li = view.items.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (doc && li) updateItem(li, doc);
  }
}

async function remove(id) {
  const image = current.get(id)?.data.image;
  try {
    await todos.doc(id).delete();
  } catch (error) {
    toast(`Could not delete: ${messageOf(error)}`);
    return;
  }
  if (image) images.remove(image).catch(() => undefined);
}

function showProgress(li, sent, total) {
  const box = $('.upload', li);
  const bar = $('.upload-bar', li);
  box.hidden = false;
  const percent = total ? Math.min(100, Math.round((sent / total) * 100)) : 0;
  bar.value = percent;
  $('.upload-label', li).textContent = total ? `${percent}%` : `${Math.round(sent / 1024)} KiB`;
}

async function attachImage(li, id, file) {
  const extension = IMAGE_TYPES[file.type];
  if (!extension) return toast('Pick a PNG, JPEG, GIF, WebP or AVIF image.');
  if (file.size > MAX_IMAGE_BYTES) return toast('Images may be at most 5 MiB.');
  if (uploads.has(id)) return;
  const user = me();
  const previous = current.get(id)?.data.image;
  // A random part keeps paths unguessable in the public bucket, and a new path per upload
  // means nobody ever sees a half-replaced picture.
  const path = `${user.id}/${id}-${crypto.randomUUID()}.${extension}`;
  uploads.set(id, { sent: 0, total: file.size });
  li.classList.add('is-uploading');
  showProgress(li, 0, file.size);
  try {
    await images.upload(path, file, {
      contentType: file.type,
      onProgress: (sent, total) => showProgress(li, sent, total ?? file.size),
    });
    showProgress(li, file.size, file.size);
    await todos.doc(id).update({ image: path });
    if (previous) images.remove(previous).catch(() => undefined);
  } catch (error) {
    toast(`Upload failed: ${messageOf(error)}`);
    images.remove(path).catch(() => undefined);
  } finally {
    uploads.delete(id);
    li.classList.remove('is-uploading');
    // Leave the full bar up a moment so the end of a quick upload is seen.
    setTimeout(() => {
      if (!uploads.has(id)) $('.upload', li).hidden = true;
    }, 1500);
  }
}

// ---- forms ---------------------------------------------------------------------------

view.newItem.addEventListener('submit', (event) => {
  event.preventDefault();
  const title = view.newTitle.value.trim();
  if (!title) return;
  view.newTitle.value = '';
  add(title);
});

view.authForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const action = event.submitter?.dataset.action ?? 'sign-in';
  const email = $('#email').value.trim();
  const password = $('#password').value;
  const name = $('#name').value.trim();
  if (!email || !password) return showAuthError('Enter an email and a password.');
  await authenticate(() =>
    action === 'sign-up'
      ? basalt.auth.signUp({ email, password, data: name ? { name } : undefined })
      : basalt.auth.signIn({ email, password }),
  );
});

$('#guest').addEventListener('click', () => authenticate(() => basalt.auth.signInAnonymously()));

$('#passkey').addEventListener('click', () =>
  authenticate(() => basalt.auth.signInWithPasskey({ email: $('#email').value.trim() || undefined })),
);

$('#sign-out').addEventListener('click', async () => {
  try {
    await basalt.auth.signOut();
  } catch (error) {
    toast(`Signed out here, but the server did not confirm: ${messageOf(error)}`);
  }
});

async function authenticate(attempt) {
  const buttons = view.authForm.querySelectorAll('button');
  buttons.forEach((button) => (button.disabled = true));
  view.authError.hidden = true;
  try {
    const { session, mfa_required: mfaRequired } = await attempt();
    if (!session) showAuthError('Check your inbox: confirm your email, then sign in.');
    view.authForm.reset();
    // The account has a second factor: the security page asks for it.
    if (mfaRequired) window.location.assign('/security.html');
  } catch (error) {
    showAuthError(messageOf(error));
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

function showAuthError(message) {
  view.authError.textContent = message;
  view.authError.hidden = false;
}

// ---- start ---------------------------------------------------------------------------

await basalt.auth.ready;
if (me()) showSignedIn(me());
else showSignedOut();
