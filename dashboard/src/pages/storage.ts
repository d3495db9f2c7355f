import { encodePath, type Bucket, type StoredObject } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { badge, field, formatBytes, formatTime, h, replace } from '../dom.js';
import { dataTable, listPanel, newItemPane, savingForm } from '../ui.js';
import { RulesEditor } from './rules-editor.js';

const BUCKET_RULES_HINT =
  'Rule expressions with `object` (path, size, content_type, owner), e.g. auth != null && object.owner == auth.uid. An empty rule means only the service key (and, for read, anyone when the bucket is public).';

/** Storage: buckets, browsing a bucket by prefix ("folders"), uploads, image preview, deletes. */
export async function storagePage(ctx: Context): Promise<Page> {
  const { buckets } = await ctx.api.get<{ buckets: Bucket[] }>('/v1/admin/buckets');
  const selected = ctx.params.bucket ? buckets.find((b) => b.name === ctx.params.bucket) : undefined;
  if (ctx.params.bucket && !selected) throw new Error(`No bucket named "${ctx.params.bucket}".`);
  const urls: string[] = [];

  const sidebar = listPanel(
    'Buckets',
    'bucket-list',
    buckets.map((b) => ({
      name: b.name,
      path: `storage/${b.name}`,
      active: b.name === selected?.name,
      extra: b.public ? badge('public', 'info') : null,
    })),
    h('a', { class: 'button', href: link('storage') }, '+ New bucket'),
  );
  const main = selected ? bucketView(ctx, selected, urls) : newBucketForm(ctx);
  return {
    element: h('div', { class: 'page storage with-list' }, sidebar, h('section', { class: 'detail' }, main)),
    dispose: () => urls.forEach((url) => URL.revokeObjectURL(url)),
  };
}

function newBucketForm(ctx: Context): HTMLElement {
  const name = h('input', { name: 'bucket-name', required: true, placeholder: 'e.g. avatars' });
  const isPublic = h('input', { type: 'checkbox', name: 'public' });
  const maxSize = h('input', { type: 'number', name: 'max-file-size', min: 1, placeholder: 'server default' });
  const mimeTypes = h('input', { name: 'allowed-mime-types', placeholder: 'e.g. image/png, image/jpeg (empty: any)' });
  return newItemPane(
    'New bucket',
    'new-bucket',
    'Create bucket',
    async () => {
      const body: Record<string, unknown> = { name: name.value.trim(), public: isPublic.checked };
      if (maxSize.value) body.max_file_size = Number(maxSize.value);
      const types = contentTypes(mimeTypes);
      if (types.length > 0) body.allowed_mime_types = types;
      await ctx.api.json('POST', '/v1/admin/buckets', body);
      ctx.notify(`Created bucket ${name.value.trim()}.`);
      ctx.navigate(`storage/${name.value.trim()}`);
    },
    [
      field('Name', name),
      h('label', { class: 'check' }, isPublic, 'Public: anyone may read its files without a token'),
      field('Largest file (bytes)', maxSize),
      field('Allowed content types', mimeTypes),
    ],
  );
}

/** The content types typed into a comma-separated field. */
function contentTypes(input: HTMLInputElement): string[] {
  return input.value
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
}

function bucketView(ctx: Context, bucket: Bucket, urls: string[]): HTMLElement {
  let prefix = ctx.query.get('prefix') ?? '';
  const listing = h('div', { class: 'table-wrap' });
  const more = h('div', { class: 'pager' });
  const previewPanel = h('aside', { class: 'card side preview', id: 'object-preview', hidden: true });
  const crumbs = h('nav', { class: 'crumbs' });
  const files = h('input', { type: 'file', name: 'files', multiple: true });
  const overwrite = h('input', { type: 'checkbox', name: 'overwrite' });
  const progress = h('span', { class: 'muted' });

  const open = (nextPrefix: string) => {
    prefix = nextPrefix;
    history.replaceState(
      null,
      '',
      `${link(`storage/${bucket.name}`)}${prefix ? `?prefix=${encodeURIComponent(prefix)}` : ''}`,
    );
    void load();
  };

  const load = async () => {
    replace(
      crumbs,
      h('a', { href: '#', onclick: (e: Event) => (e.preventDefault(), open('')) }, bucket.name),
      prefix
        .split('/')
        .filter(Boolean)
        .map((segment, i, all) => [
          ' / ',
          h(
            'a',
            { href: '#', onclick: (e: Event) => (e.preventDefault(), open(`${all.slice(0, i + 1).join('/')}/`)) },
            segment,
          ),
        ]),
    );
    replace(listing, h('p', { class: 'muted' }, 'Loading…'));
    replace(more);
    const folders = new Set<string>();
    const objects: StoredObject[] = [];
    const fetchPage = async (after: string | null) => {
      const params = new URLSearchParams({ prefix, limit: '200' });
      if (after) params.set('after', after);
      const page = await ctx.api.get<{ objects: StoredObject[]; next_cursor: string | null }>(
        `/v1/storage/${bucket.name}?${params}`,
      );
      // The listing is flat; "folders" are the next path segment below the prefix.
      for (const object of page.objects) {
        const rest = object.path.slice(prefix.length);
        const slash = rest.indexOf('/');
        if (slash >= 0) folders.add(`${prefix}${rest.slice(0, slash + 1)}`);
        else objects.push(object);
      }
      show();
      replace(
        more,
        page.next_cursor
          ? h('button', { type: 'button', onclick: () => void fetchPage(page.next_cursor) }, 'Load more')
          : null,
      );
    };
    const show = () => {
      if (folders.size === 0 && objects.length === 0) {
        replace(listing, h('p', { class: 'empty' }, prefix ? 'Nothing under this prefix.' : 'This bucket is empty.'));
        return;
      }
      replace(
        listing,
        dataTable(
          { class: 'table clickable', id: 'objects' },
          ['Name', 'Type', 'Size', 'Updated', ''],
          [
            [...folders]
              .sort()
              .map((folder) =>
                h(
                  'tr',
                  { 'data-folder': folder, onclick: () => open(folder) },
                  h('td', null, '📁 ', folder.slice(prefix.length)),
                  h('td', { class: 'muted' }, 'folder'),
                  h('td'),
                  h('td'),
                  h('td'),
                ),
              ),
            objects.map((object) =>
              h(
                'tr',
                { 'data-path': object.path, onclick: () => void showObject(object) },
                h('td', null, object.path.slice(prefix.length)),
                h('td', { class: 'small' }, object.content_type),
                h('td', { class: 'nowrap' }, formatBytes(object.size)),
                h('td', { class: 'nowrap small' }, formatTime(object.updated_at)),
                h(
                  'td',
                  { class: 'actions' },
                  h(
                    'button',
                    {
                      type: 'button',
                      class: 'danger',
                      onclick: (event: Event) => {
                        event.stopPropagation();
                        void removeObject(object);
                      },
                    },
                    'Delete',
                  ),
                ),
              ),
            ),
          ],
        ),
      );
    };
    try {
      await fetchPage(null);
    } catch (error) {
      replace(listing, h('p', { class: 'error-text' }, error instanceof Error ? error.message : String(error)));
    }
  };

  const removeObject = async (object: StoredObject) => {
    if (!confirm(`Delete ${object.path}?`)) return;
    try {
      await ctx.api.raw('DELETE', `/v1/storage/${bucket.name}/${encodePath(object.path)}`);
      ctx.notify(`Deleted ${object.path}.`);
      previewPanel.hidden = true;
      await load();
    } catch (error) {
      reportError(ctx, error);
    }
  };

  const showObject = async (object: StoredObject) => {
    previewPanel.hidden = false;
    const media = h('div', { class: 'media' }, h('p', { class: 'muted' }, 'Loading…'));
    replace(
      previewPanel,
      h('h3', null, object.path.split('/').pop() ?? object.path),
      media,
      h(
        'dl',
        { class: 'facts' },
        [
          ['Path', object.path],
          ['Type', object.content_type],
          ['Size', formatBytes(object.size)],
          ['ETag', object.etag],
          ['Owner', object.owner ?? '—'],
          ['Updated', formatTime(object.updated_at)],
        ].flatMap(([term, value]) => [h('dt', null, term), h('dd', { class: 'mono small' }, value)]),
      ),
      h(
        'div',
        { class: 'buttons' },
        h('button', { type: 'button', class: 'danger', onclick: () => void removeObject(object) }, 'Delete'),
        h('button', { type: 'button', onclick: () => (previewPanel.hidden = true) }, 'Close'),
      ),
    );
    try {
      // Fetched with the key as a header and shown from a blob: URL, so the key never sits in an <img src>.
      const response = await ctx.api.raw('GET', `/v1/storage/${bucket.name}/${encodePath(object.path)}`);
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      urls.push(url);
      const download = h(
        'a',
        { class: 'button', href: url, download: object.path.split('/').pop() ?? 'file' },
        'Download',
      );
      if (object.content_type.startsWith('image/')) {
        replace(media, h('img', { src: url, alt: object.path, id: 'preview-image' }), download);
      } else if (/^text\/|json|xml|javascript/.test(object.content_type) && blob.size <= 256 * 1024) {
        replace(media, h('pre', { class: 'code' }, await blob.text()), download);
      } else {
        replace(media, h('p', { class: 'muted' }, 'No preview for this type.'), download);
      }
    } catch (error) {
      replace(media, h('p', { class: 'error-text' }, error instanceof Error ? error.message : String(error)));
    }
  };

  const upload = async (event: Event) => {
    event.preventDefault();
    const chosen = [...(files.files ?? [])];
    if (chosen.length === 0) return;
    let done = 0;
    for (const file of chosen) {
      progress.textContent = `Uploading ${file.name} (${done + 1}/${chosen.length})…`;
      try {
        await ctx.api.raw('PUT', `/v1/storage/${bucket.name}/${encodePath(`${prefix}${file.name}`)}`, {
          body: file,
          headers: {
            'content-type': file.type || 'application/octet-stream',
            ...(overwrite.checked ? { 'x-upsert': 'true' } : {}),
          },
        });
        done++;
      } catch (error) {
        reportError(ctx, error);
      }
    }
    progress.textContent = '';
    files.value = '';
    if (done > 0) ctx.notify(`Uploaded ${done} file(s).`);
    await load();
  };

  const settings = bucketSettings(ctx, bucket);
  void load();
  return h(
    'div',
    null,
    h(
      'header',
      { class: 'page-head' },
      h('h1', null, bucket.name, bucket.public ? badge('public', 'info') : badge('private', 'queued')),
      usageLine(bucket),
      h(
        'div',
        { class: 'buttons' },
        h(
          'button',
          { type: 'button', id: 'bucket-settings-toggle', onclick: () => (settings.hidden = !settings.hidden) },
          'Settings',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            onclick: async () => {
              const typed = prompt(`Delete bucket "${bucket.name}" and every file in it? Type its name to confirm.`);
              if (typed !== bucket.name) return;
              try {
                await ctx.api.json('DELETE', `/v1/admin/buckets/${bucket.name}?force=true`);
                ctx.notify(`Deleted bucket ${bucket.name}.`);
                ctx.navigate('storage');
              } catch (error) {
                reportError(ctx, error);
              }
            },
          },
          'Delete bucket',
        ),
      ),
    ),
    settings,
    h(
      'form',
      { class: 'query-bar', id: 'upload-form', onsubmit: upload },
      h(
        'label',
        { class: 'field' },
        h('span', { class: 'field-label' }, 'Prefix'),
        h('input', {
          name: 'prefix',
          value: prefix,
          placeholder: 'e.g. photos/2026/',
          onchange: (e: Event) => open((e.target as HTMLInputElement).value),
        }),
      ),
      field('Upload to this prefix', files),
      h('label', { class: 'check' }, overwrite, 'Overwrite'),
      h('button', { type: 'submit', class: 'primary' }, 'Upload'),
      progress,
    ),
    crumbs,
    h('div', { class: 'split' }, h('div', null, listing, more), previewPanel),
  );
}

/** What the bucket holds, against its quota when it has one. */
function usageLine(bucket: Bucket): HTMLElement {
  const used = `${formatBytes(bucket.usage.bytes)} in ${bucket.usage.objects} file(s)`;
  const quotas = [
    bucket.max_total_bytes === null ? null : `of ${formatBytes(bucket.max_total_bytes)}`,
    bucket.max_bytes_per_user === null ? null : `at most ${formatBytes(bucket.max_bytes_per_user)} per user`,
  ].filter(Boolean);
  return h('p', { class: 'muted', id: 'bucket-usage' }, [used, ...quotas].join(', '));
}

/** Bytes typed into a quota field: empty means no quota. */
function quotaValue(input: HTMLInputElement): number | null {
  return input.value ? Number(input.value) : null;
}

/** A bucket's settings: public flag, size limit, allowed types and rules (parse errors shown inline). */
function bucketSettings(ctx: Context, bucket: Bucket): HTMLElement {
  const isPublic = h('input', { type: 'checkbox', name: 'settings-public', checked: bucket.public });
  const maxSize = h('input', {
    type: 'number',
    name: 'settings-max-file-size',
    min: 1,
    placeholder: 'server default',
    value: bucket.max_file_size === null ? '' : String(bucket.max_file_size),
  });
  const mimeTypes = h('input', {
    name: 'settings-allowed-mime-types',
    placeholder: 'any',
    value: (bucket.allowed_mime_types ?? []).join(', '),
  });
  const totalQuota = h('input', {
    type: 'number',
    name: 'settings-max-total-bytes',
    min: 0,
    placeholder: 'no quota',
    value: bucket.max_total_bytes === null ? '' : String(bucket.max_total_bytes),
  });
  const userQuota = h('input', {
    type: 'number',
    name: 'settings-max-bytes-per-user',
    min: 0,
    placeholder: 'no quota',
    value: bucket.max_bytes_per_user === null ? '' : String(bucket.max_bytes_per_user),
  });
  const rules = new RulesEditor(['read', 'write', 'delete'] as const, bucket.rules, BUCKET_RULES_HINT);
  return savingForm(
    { class: 'card stack settings', id: 'bucket-settings', hidden: true },
    'Save settings',
    async () => {
      const types = contentTypes(mimeTypes);
      await ctx.api.json('PATCH', `/v1/admin/buckets/${bucket.name}`, {
        public: isPublic.checked,
        max_file_size: maxSize.value ? Number(maxSize.value) : null,
        allowed_mime_types: types.length > 0 ? types : null,
        max_total_bytes: quotaValue(totalQuota),
        max_bytes_per_user: quotaValue(userQuota),
        rules: rules.values({ omitEmpty: true }),
      });
      ctx.notify(`Saved the settings of ${bucket.name}.`);
      ctx.navigate(`storage/${bucket.name}`, { replace: true });
    },
    [
      h('h3', null, 'Settings'),
      h('label', { class: 'check' }, isPublic, 'Public: anyone may read its files without a token'),
      h(
        'div',
        { class: 'query-bar' },
        field('Largest file (bytes)', maxSize),
        field('Allowed content types', mimeTypes),
      ),
      h(
        'div',
        { class: 'query-bar' },
        field('Quota: all files (bytes)', totalQuota),
        field('Quota: per user (bytes)', userQuota),
      ),
      rules.element,
    ],
    rules,
  );
}
