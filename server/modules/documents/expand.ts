/**
 * `expand` (docs/documents.md#references-and-expand): documents gain the documents their
 * reference fields name. Paths resolve against each collection's `refs`, the longest
 * declared prefix first (`post.author` is the ref `post`, then `author` of the post's
 * collection, unless `post.author` is itself a ref), at most two hops deep.
 *
 * Documents are fetched level by level: one statement per level, a UNION ALL of one
 * `id = ANY(...)` select per referenced collection, each filtered by that collection's own
 * read rule for the caller. What the caller may not read (or what does not exist) expands
 * to null, or is left out of a list.
 */
import { AppError } from '../../internal/errors.js';
import { parseFieldPath } from './names.js';
import { valueAtPath } from './query.js';
import type { Document, RefSettings } from './types.js';

export const EXPAND_LIMITS = { maxPaths: 10, maxDepth: 2, maxListIds: 100 } as const;

/** One reference to expand, and those to expand inside the documents it yields. */
export interface ExpandNode {
  /** The ref's path in its collection, as declared in refs (dotted). */
  path: string;
  target: string;
  children: ExpandNode[];
}

function invalid(message: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field: 'expand' } });
}

/** The requested paths: an array of strings, or (query string) a comma-separated list. */
export function parseExpandInput(input: unknown): string[] {
  if (input === undefined || input === null || input === '') return [];
  const list = typeof input === 'string' ? input.split(',').map((item) => item.trim()) : input;
  if (!Array.isArray(list) || list.length > EXPAND_LIMITS.maxPaths) {
    throw invalid(`expand: a list of at most ${EXPAND_LIMITS.maxPaths} reference paths.`);
  }
  return list.map((path, i) => parseFieldPath(path, `expand[${i}]`).join('.'));
}

/**
 * Resolves the paths into a tree of references. `refsOf` gives a collection's refs (null
 * when the collection does not exist: its own refs then resolve nothing). Unknown paths are
 * 400, so a typo is not silently an empty expansion.
 */
export async function planExpand(
  collection: string,
  refs: RefSettings,
  paths: string[],
  refsOf: (collection: string) => Promise<RefSettings | null>,
): Promise<ExpandNode[]> {
  const roots: ExpandNode[] = [];
  for (const requested of paths) {
    let nodes = roots;
    let currentRefs: RefSettings | null = refs;
    let rest = requested.split('.');
    let depth = 0;
    while (rest.length > 0) {
      if (depth === EXPAND_LIMITS.maxDepth) throw invalid(`expand: "${requested}" goes deeper than two references.`);
      let cut = rest.length;
      while (cut > 0 && !(currentRefs && Object.hasOwn(currentRefs, rest.slice(0, cut).join('.')))) cut--;
      if (cut === 0) {
        throw invalid(
          `expand: "${requested}" is not a reference of "${depth === 0 ? collection : 'its target'}" (see refs).`,
        );
      }
      const path = rest.slice(0, cut).join('.');
      const target = (currentRefs as RefSettings)[path] as string;
      let node = nodes.find((candidate) => candidate.path === path);
      if (!node) {
        node = { path, target, children: [] };
        nodes.push(node);
      }
      rest = rest.slice(cut);
      depth++;
      nodes = node.children;
      if (rest.length > 0) currentRefs = await refsOf(target);
    }
  }
  return roots;
}

/** The ids a document's reference field holds: one id, a list (first maxListIds), or none. */
export function referencedIds(doc: Document, path: string): { ids: string[]; list: boolean } {
  const value = valueAtPath(doc.data, path.split('.'));
  if (typeof value === 'string') return { ids: [value], list: false };
  if (Array.isArray(value)) {
    return {
      ids: value.slice(0, EXPAND_LIMITS.maxListIds).filter((item): item is string => typeof item === 'string'),
      list: true,
    };
  }
  return { ids: [], list: false };
}

/** One level's fetch: for each referenced collection, the ids wanted. */
export type LevelRequest = Map<string, Set<string>>;

interface ExpandGroup {
  docs: Document[];
  nodes: ExpandNode[];
}

type FetchLevel = (request: LevelRequest) => Promise<Map<string, Map<string, Document>>>;

/** Expands every group's documents one level, with one fetch for all of them, then the next level likewise. */
async function expandGroups(groups: ExpandGroup[], fetchLevel: FetchLevel): Promise<Document[][]> {
  const request: LevelRequest = new Map();
  for (const { docs, nodes } of groups) {
    for (const node of nodes) {
      const wanted = request.get(node.target) ?? new Set<string>();
      for (const doc of docs) for (const id of referencedIds(doc, node.path).ids) wanted.add(id);
      request.set(node.target, wanted);
    }
  }
  const anything = [...request.values()].some((ids) => ids.size > 0);
  const fetched = anything ? await fetchLevel(request) : new Map<string, Map<string, Document>>();
  const children: ExpandGroup[] = [];
  const childOf = new Map<string, number>();
  groups.forEach(({ docs, nodes }, g) => {
    for (const node of nodes) {
      if (node.children.length === 0) continue;
      const byId = fetched.get(node.target);
      const found = new Map<string, Document>();
      for (const doc of docs) {
        for (const id of referencedIds(doc, node.path).ids) {
          const hit = byId?.get(id);
          if (hit) found.set(id, hit);
        }
      }
      childOf.set(`${g} ${node.path}`, children.length);
      children.push({ docs: [...found.values()], nodes: node.children });
    }
  });
  const expandedChildren = children.length > 0 ? await expandGroups(children, fetchLevel) : [];
  return groups.map(({ docs, nodes }, g) =>
    docs.map((doc) => {
      const expand: NonNullable<Document['expand']> = { ...doc.expand };
      for (const node of nodes) {
        const child = childOf.get(`${g} ${node.path}`);
        const byId =
          child !== undefined
            ? new Map((expandedChildren[child] ?? []).map((item) => [item.id, item]))
            : (fetched.get(node.target) ?? new Map<string, Document>());
        const { ids, list } = referencedIds(doc, node.path);
        expand[node.path] = list
          ? ids.map((id) => byId.get(id)).filter((item): item is Document => item !== undefined)
          : ids[0] !== undefined
            ? (byId.get(ids[0]) ?? null)
            : null;
      }
      return { ...doc, expand };
    }),
  );
}

/**
 * Expands `docs` along `nodes`, level by level. `fetchLevel` reads one level's documents in
 * one statement (readable ones only) and returns them by collection and id. Returns new
 * document objects; the inputs are not changed.
 */
export async function expandDocuments(
  docs: Document[],
  nodes: ExpandNode[],
  fetchLevel: FetchLevel,
): Promise<Document[]> {
  if (nodes.length === 0 || docs.length === 0) return docs;
  return (await expandGroups([{ docs, nodes }], fetchLevel))[0] ?? docs;
}
