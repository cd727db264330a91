// The README is the reference users read: it must name every public option, method, relay event
// and error code the code has, and quote the latest recorded chaos figures, not older ones.
// The surface is read from the sources with the TypeScript parser, so a new option or code that
// is not documented fails here.
import assert from 'node:assert/strict'
import { globSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, it } from 'node:test'
import ts from 'typescript'

const ROOT = resolve(import.meta.dirname, '..')
const README = readFileSync(resolve(ROOT, 'README.md'), 'utf8')

function parse(path: string): ts.SourceFile {
  return ts.createSourceFile(path, readFileSync(resolve(ROOT, path), 'utf8'), ts.ScriptTarget.Latest, true)
}

function findDeclaration<T extends ts.Node>(
  file: ts.SourceFile,
  name: string,
  is: (node: ts.Node) => node is T,
): T {
  let found: T | undefined
  const visit = (node: ts.Node): void => {
    if (found) return
    if (is(node) && (node as unknown as { name?: ts.Identifier }).name?.text === name) found = node
    else ts.forEachChild(node, visit)
  }
  visit(file)
  assert.ok(found, `${name} not found in ${file.fileName}`)
  return found
}

/** Marked `@internal` in its doc comment: filled in by adapters or tests, not by users. */
function isInternal(node: ts.Node): boolean {
  return /@internal\b/.test(node.getFullText().slice(0, node.getLeadingTriviaWidth()))
}

/** Property names of an interface (own members only), skipping those documented as internal. */
function interfaceProperties(path: string, name: string, internal: readonly string[] = []): string[] {
  const declaration = findDeclaration(parse(path), name, ts.isInterfaceDeclaration)
  return declaration.members
    .filter(ts.isPropertySignature)
    .filter((member) => !isInternal(member))
    .map((member) => (member.name as ts.Identifier).text)
    .filter((property) => !internal.includes(property))
}

/** Public methods of a class: not `#private`, not `protected`, not the constructor. */
function publicMethods(path: string, name: string): string[] {
  const declaration = findDeclaration(parse(path), name, ts.isClassDeclaration)
  return declaration.members
    .filter((member) => ts.isMethodDeclaration(member) && ts.isIdentifier(member.name))
    .filter(
      (member) =>
        !(
          ts.getCombinedModifierFlags(member as ts.Declaration) &
          (ts.ModifierFlags.Protected | ts.ModifierFlags.Private)
        ),
    )
    .map((member) => ((member as ts.MethodDeclaration).name as ts.Identifier).text)
}

function missingFromReadme(names: readonly string[]): string[] {
  return names.filter((name) => !README.includes(`\`${name}`) && !README.includes(`.${name}(`))
}

describe('README documents the public surface', () => {
  it('every error and warning code', () => {
    const source = readFileSync(resolve(ROOT, 'src/core/errors.ts'), 'utf8')
    const codes = [...new Set([...source.matchAll(/'(KE_[A-Z_]+)'/g)].map((match) => match[1] as string))]
    assert.ok(codes.length > 10, 'the code lists were not found')
    assert.deepEqual(
      codes.filter((code) => !README.includes(code)),
      [],
    )
  })

  it('no code outside the closed lists', () => {
    const listed = readFileSync(resolve(ROOT, 'src/core/errors.ts'), 'utf8')
    const strays = sourceFiles()
      .filter((path) => path !== 'src/core/errors.ts')
      .flatMap((path) => [...readFileSync(resolve(ROOT, path), 'utf8').matchAll(/'(KE_[A-Z0-9_]+)'/g)])
      .map((match) => match[1] as string)
      .filter((code) => !listed.includes(`'${code}'`))
    assert.deepEqual(strays, [])
  })

  it('every relay event type', () => {
    const declaration = findDeclaration(parse('src/core/relay.ts'), 'RelayEvent', ts.isTypeAliasDeclaration)
    const types = [...declaration.getText().matchAll(/type: '([a-z-]+)'/g)].map((match) => match[1] as string)
    assert.ok(types.length >= 4)
    assert.deepEqual(
      types.filter((type) => !README.includes(`\`${type}\``)),
      [],
    )
  })

  it('every option of defineTopic, relay() and the Kafka connection', () => {
    const options = [
      ...interfaceProperties('src/core/topic.ts', 'TopicOptions'),
      // onStop and topicRetry are filled in by the adapters, not by users.
      ...interfaceProperties('src/core/relay.ts', 'RelayOptions', ['onStop', 'topicRetry']),
      ...interfaceProperties('src/dialects/postgres/postgres-outbox.ts', 'PostgresRelayOptions'),
      ...interfaceProperties('src/transports/kafka/index.ts', 'KafkaOptions'),
      ...interfaceProperties('src/core/outbox.ts', 'OutboxOptions'),
      ...interfaceProperties('src/outbox/parts.ts', 'SqlOutboxOptions'),
      ...interfaceProperties('src/dialects/postgres/postgres-outbox.ts', 'PostgresOutboxOptions'),
      ...interfaceProperties('src/adapters/pg/index.ts', 'PgOutboxOptions'),
    ]
    assert.deepEqual(missingFromReadme(options), [])
  })

  it('every public method of the outbox, the relay and the dead letters', () => {
    const methods = [
      ...publicMethods('src/outbox/sql-outbox.ts', 'SqlOutbox'),
      ...publicMethods('src/adapters/pg/index.ts', 'PgOutbox'),
      ...publicMethods('src/core/relay/lifecycle.ts', 'OutboxRelay'),
      ...interfaceMethods('src/core/dead-letters.ts', 'DeadLetters'),
    ]
    assert.ok(methods.includes('relay') && methods.includes('start'))
    assert.deepEqual(missingFromReadme(methods), [])
  })
})

function interfaceMethods(path: string, name: string): string[] {
  const declaration = findDeclaration(parse(path), name, ts.isInterfaceDeclaration)
  return declaration.members
    .filter((member) => ts.isMethodSignature(member) || ts.isPropertySignature(member))
    .map((member) => (member.name as ts.Identifier).text)
}

describe('README figures', () => {
  it("quote RELIABILITY.md's latest full chaos run", () => {
    const reliability = readFileSync(resolve(ROOT, 'RELIABILITY.md'), 'utf8')
    const latest = /<!-- latest-chaos: ([^>]*) -->/.exec(reliability)
    assert.ok(latest, 'RELIABILITY.md has no <!-- latest-chaos: ... --> marker')
    const quoted = /<!-- latest-chaos: ([^>]*) -->/.exec(README)
    assert.ok(quoted, 'README.md has no <!-- latest-chaos: ... --> marker')
    assert.equal(quoted[1], latest[1], 'README quotes an older chaos run than RELIABILITY.md')
    const figures = (latest[1] as string).split(/\s*,\s*/)
    for (const figure of figures) assert.ok(README.includes(figure), `README does not show ${figure}`)
  })
})

function sourceFiles(): string[] {
  return globSync('src/**/*.ts', { cwd: ROOT })
}
