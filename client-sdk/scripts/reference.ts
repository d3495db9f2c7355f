/**
 * Writes docs/sdk-reference.md from the SDK's types: every export of client-sdk/src/index.ts,
 * read with the TypeScript compiler API (signatures as the declaration files give them, doc
 * comments as written), grouped by area. A test checks that the committed page is current.
 *   npm run docs:sdk
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import ts from 'typescript';

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const entry = path.join(sdkDir, 'src', 'index.ts');
export const REFERENCE_FILE = path.join(sdkDir, '..', 'docs', 'sdk-reference.md');

/** Areas in page order, and the source files whose exports belong to each. */
const AREAS: Array<{ title: string; files: string[]; intro: string }> = [
  { title: 'Client', files: ['client.ts', 'transport.ts'], intro: 'Creating a client and its options.' },
  {
    title: 'Auth',
    files: ['auth.ts', 'factors.ts'],
    intro: '`basalt.auth`: sign-up, sign-in, sessions, the current user, second factors and passkeys.',
  },
  {
    title: 'Documents',
    files: ['db.ts', 'field-paths.ts', 'order.ts'],
    intro: '`basalt.db`: collections, documents, queries, batches, field transforms, typed paths.',
  },
  {
    title: 'Shapes',
    files: ['wire.ts'],
    intro: 'What the server sends: documents, stored objects, users and sessions.',
  },
  {
    title: 'Realtime',
    files: ['realtime.ts', 'channel.ts', 'live-query.ts'],
    intro: 'The shared websocket: live queries (`onSnapshot`) and channels (broadcast, presence).',
  },
  {
    title: 'Storage',
    files: ['storage.ts', 'resumable.ts'],
    intro: '`basalt.storage`: buckets and their objects, and resumable uploads.',
  },
  { title: 'Functions', files: ['functions.ts'], intro: '`basalt.functions`: calling HTTP functions.' },
  { title: 'Events', files: ['events.ts'], intro: '`basalt.events`: publishing to topics (docs/events.md).' },
  {
    title: 'Errors',
    files: ['errors.ts'],
    intro: 'Every call rejects with a `BasaltError` whose `code` is one of the catalogue codes.',
  },
];

const TYPE_FLAGS = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseAliasDefinedOutsideCurrentScope;

interface Entry {
  name: string;
  kind: 'function' | 'class' | 'interface' | 'type' | 'const';
  file: string;
  markdown: string;
}

function docOf(symbol: ts.Symbol, checker: ts.TypeChecker): string {
  const text = ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim();
  const tags = symbol
    .getJsDocTags(checker)
    .filter((tag) => tag.name === 'deprecated')
    .map((tag) => `**Deprecated.** ${ts.displayPartsToString(tag.text ?? []).trim()}`);
  return [text, ...tags].filter(Boolean).join('\n\n');
}

/** A doc comment as `/** ... *\/` lines at an indent, for members inside a code block. */
function commentLines(doc: string, indent: string): string[] {
  if (!doc) return [];
  const lines = doc.split('\n');
  if (lines.length === 1) return [`${indent}/** ${lines[0]} */`];
  return [`${indent}/**`, ...lines.map((line) => `${indent} * ${line}`.trimEnd()), `${indent} */`];
}

function isPublicMember(declaration: ts.Declaration): boolean {
  const name = ts.getNameOfDeclaration(declaration);
  if (name && ts.isPrivateIdentifier(name)) return false;
  const flags = ts.getCombinedModifierFlags(declaration);
  return (flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) === 0;
}

type SignatureDeclaration =
  ts.MethodDeclaration | ts.MethodSignature | ts.FunctionDeclaration | ts.CallSignatureDeclaration;

/**
 * A signature as its author wrote its types (aliases kept: `BasaltError`, not the union the
 * checker would expand it to); types left to inference are printed by the checker.
 */
function signatureText(name: string, declaration: SignatureDeclaration, checker: ts.TypeChecker): string {
  const parameters = declaration.parameters.map((parameter) => {
    const optional = parameter.questionToken !== undefined || parameter.initializer !== undefined;
    const rest = parameter.dotDotDotToken ? '...' : '';
    const type = parameter.type
      ? parameter.type.getText()
      : checker.typeToString(checker.getTypeAtLocation(parameter), parameter, TYPE_FLAGS);
    return `${rest}${parameter.name.getText()}${optional ? '?' : ''}: ${type}`;
  });
  let returns = declaration.type?.getText();
  if (returns === undefined) {
    const signature = checker.getSignatureFromDeclaration(declaration);
    returns = signature ? checker.typeToString(signature.getReturnType(), declaration, TYPE_FLAGS) : 'void';
  }
  return `${name}${typeParametersText(declaration)}(${parameters.join(', ')}): ${returns}`;
}

/** The declarations that make up a callable's public signatures: its overloads, else its one implementation. */
function signatureDeclarations(symbol: ts.Symbol): SignatureDeclaration[] {
  const all = (symbol.declarations ?? []).filter(
    (declaration): declaration is SignatureDeclaration =>
      ts.isMethodDeclaration(declaration) || ts.isMethodSignature(declaration) || ts.isFunctionDeclaration(declaration),
  );
  const implementations = all.filter((declaration) => 'body' in declaration && declaration.body !== undefined);
  const hasOverloads = implementations.length > 0 && implementations.length < all.length;
  return hasOverloads ? all.filter((declaration) => !implementations.includes(declaration)) : all;
}

/** The public members of a class or interface, as declaration lines with their docs. */
function memberLines(symbol: ts.Symbol, checker: ts.TypeChecker, forClass: boolean): string[] {
  const lines: string[] = [];
  const members = [...(symbol.members?.values() ?? [])].filter(
    (member) =>
      member.name !== '__constructor' &&
      member.name !== '__index' &&
      (member.flags & ts.SymbolFlags.TypeParameter) === 0 &&
      (member.declarations ?? []).every((declaration) => isPublicMember(declaration)),
  );
  for (const member of members) {
    const declaration = member.declarations?.[0];
    if (!declaration) continue;
    lines.push(...commentLines(docOf(member, checker), '  '));
    if (ts.isMethodDeclaration(declaration) || ts.isMethodSignature(declaration)) {
      for (const overload of signatureDeclarations(member))
        lines.push(`  ${signatureText(member.name, overload, checker)};`);
      continue;
    }
    const isGetter = ts.isGetAccessorDeclaration(declaration);
    const readonly =
      (isGetter && !member.declarations?.some(ts.isSetAccessorDeclaration)) ||
      (ts.getCombinedModifierFlags(declaration) & ts.ModifierFlags.Readonly) !== 0
        ? 'readonly '
        : '';
    const optional = (member.flags & ts.SymbolFlags.Optional) !== 0 ? '?' : '';
    const written =
      ts.isPropertyDeclaration(declaration) || ts.isPropertySignature(declaration) || isGetter
        ? declaration.type?.getText()
        : undefined;
    const type =
      written ?? checker.typeToString(checker.getTypeOfSymbolAtLocation(member, declaration), declaration, TYPE_FLAGS);
    lines.push(`  ${readonly}${member.name}${optional}: ${type};`);
  }
  if (forClass && lines.length === 0) lines.push('  // no public members');
  return lines;
}

function typeParametersText(node: { typeParameters?: ts.NodeArray<ts.TypeParameterDeclaration> }): string {
  return node.typeParameters ? `<${node.typeParameters.map((parameter) => parameter.getText()).join(', ')}>` : '';
}

function heritageText(node: ts.ClassDeclaration | ts.InterfaceDeclaration): string {
  const clauses = node.heritageClauses?.filter((clause) => clause.token === ts.SyntaxKind.ExtendsKeyword) ?? [];
  return clauses.length > 0 ? ` ${clauses.map((clause) => clause.getText()).join(' ')}` : '';
}

function code(lines: string[]): string {
  return ['```ts', ...lines, '```'].join('\n');
}

function describeExport(name: string, symbol: ts.Symbol, checker: ts.TypeChecker): Entry | null {
  const declaration = symbol.declarations?.[0];
  if (!declaration) return null;
  const file = path.basename(declaration.getSourceFile().fileName);
  const doc = docOf(symbol, checker);
  const parts: string[] = [`### ${name}`, ''];
  let kind: Entry['kind'];
  if (ts.isFunctionDeclaration(declaration)) {
    kind = 'function';
    parts.push(
      code(signatureDeclarations(symbol).map((overload) => `function ${signatureText(name, overload, checker)};`)),
    );
  } else if (ts.isClassDeclaration(declaration)) {
    kind = 'class';
    parts.push(
      code([
        `class ${name}${typeParametersText(declaration)}${heritageText(declaration)} {`,
        ...memberLines(symbol, checker, true),
        '}',
      ]),
    );
  } else if (ts.isInterfaceDeclaration(declaration)) {
    kind = 'interface';
    parts.push(
      code([
        `interface ${name}${typeParametersText(declaration)}${heritageText(declaration)} {`,
        ...memberLines(symbol, checker, false),
        '}',
      ]),
    );
  } else if (ts.isTypeAliasDeclaration(declaration)) {
    kind = 'type';
    parts.push(code([`type ${name}${typeParametersText(declaration)} = ${declaration.type.getText()};`]));
  } else if (ts.isVariableDeclaration(declaration)) {
    kind = 'const';
    parts.push(code([`const ${declaration.getText()};`]));
  } else {
    return null;
  }
  if (doc) parts.push('', doc);
  return { name, kind, file, markdown: parts.join('\n') };
}

/** The reference page's Markdown (formatted as the repository formats Markdown). */
export async function renderReference(): Promise<string> {
  const program = ts.createProgram([entry], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    lib: ['lib.es2023.d.ts', 'lib.dom.d.ts'],
    types: [],
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const moduleSymbol = source && checker.getSymbolAtLocation(source);
  if (!moduleSymbol) throw new Error(`cannot read ${entry}`);
  const entries: Entry[] = [];
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const described = describeExport(exported.name, symbol, checker);
    if (described) entries.push(described);
  }
  const byName = (a: Entry, b: Entry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const sections: string[] = [];
  const contents: string[] = [];
  for (const area of AREAS) {
    const inArea = entries.filter((candidate) => area.files.includes(candidate.file)).sort(byName);
    if (inArea.length === 0) continue;
    contents.push(
      `- **${area.title}**: ${inArea.map((item) => `[${item.name}](#${item.name.toLowerCase()})`).join(', ')}`,
    );
    sections.push(`## ${area.title}`, '', area.intro, '', ...inArea.map((item) => `${item.markdown}\n`));
  }
  const unplaced = entries.filter((candidate) => !AREAS.some((area) => area.files.includes(candidate.file)));
  if (unplaced.length > 0) {
    throw new Error(
      `exports from files without an area: ${unplaced.map((item) => `${item.name} (${item.file})`).join(', ')}`,
    );
  }
  const page = [
    '# @basalt/client — API reference',
    '',
    // Declarations rather than runnable examples: sdk-reference.test.ts keeps them equal to the types.
    '<!-- docs-test: generated declarations, kept current by client-sdk/test/sdk-reference.test.ts -->',
    '',
    'Every export of the SDK with its signature and documentation, generated from the SDK’s types',
    'by `npm run docs:sdk` (client-sdk/scripts/reference.ts): do not edit this page by hand. Start with',
    '[sdk-getting-started.md](sdk-getting-started.md) for a guided tour.',
    '',
    ...contents,
    '',
    ...sections,
  ].join('\n');
  const options = (await resolveConfig(REFERENCE_FILE)) ?? {};
  return format(page, { ...options, parser: 'markdown', filepath: REFERENCE_FILE });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(REFERENCE_FILE, await renderReference());
  process.stdout.write(`wrote ${path.relative(process.cwd(), REFERENCE_FILE)}\n`);
}
