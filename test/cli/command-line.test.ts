import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseArgs } from 'node:util'
import { parseCommandLine, parseSimple } from '../../src/cli/command-line.js'
import type { OptionSpec } from '../../src/cli/context.js'
import { COMMANDS, GLOBAL_OPTIONS } from '../../src/cli/registry.js'

const ALL: OptionSpec = Object.assign({}, GLOBAL_OPTIONS, ...Object.values(COMMANDS).map((c) => c.options))

describe('command-line parsing', () => {
  test('the simple parse agrees with parseArgs wherever it answers, and leaves the rest to it', () => {
    const answered = [
      ['token'],
      ['token', '--json'],
      ['token', '--json', '--json'],
      ['token', '--force-refresh', '--debug'],
      ['status', '--json'],
      ['token', '--help'],
      ['nonsense', '--version'],
      [''],
    ]
    for (const argv of answered) {
      const simple = parseSimple(argv, ALL)
      assert.ok(simple, argv.join(' '))
      assert.deepStrictEqual(simple, {
        ...parseArgs({ args: argv, options: ALL, allowPositionals: true, strict: true }),
      })
    }
    for (const argv of [
      [],
      ['--json', 'token'],
      ['token', '-h'],
      ['token', '--json=1'],
      ['token', '--'],
      ['token', 'extra'],
      ['token', '--scope', 'a'],
      ['token', '--min-ttl-seconds', '60'],
      ['token', '--bogus'],
      ['token', '--constructor'],
      ['token', '--__proto__'],
    ]) {
      assert.equal(parseSimple(argv, ALL), undefined, argv.join(' '))
    }
    assert.equal(parseSimple(['x', '--many'], { many: { type: 'boolean', multiple: true } }), undefined)
  })

  test('flags win over their environment variables; bad input is a usage error naming it', () => {
    const line = parseCommandLine(['token', '--min-ttl-seconds', '60'], {
      EDGETOKEN_MIN_TTL_SECONDS: '900',
      EDGETOKEN_JSON: 'yes',
    })
    assert.equal(line.kind, 'command')
    assert.equal(line.kind === 'command' && line.options['min-ttl-seconds'], '60')
    assert.equal(line.kind === 'command' && line.options.json, true)
    // parseArgs' own wording differs between Node versions: only its start and our hint are ours to check.
    const unknown = parseCommandLine(['token', '--constructor'], {})
    assert.equal(unknown.kind, 'error')
    assert.match(
      unknown.kind === 'error' ? unknown.message : '',
      /^Unknown option '--constructor'.*\(see 'edgetoken --help'\)$/,
    )
    assert.deepEqual(parseCommandLine(['token'], { EDGETOKEN_FORCE_REFRESH: 'maybe' }), {
      kind: 'error',
      message: 'EDGETOKEN_FORCE_REFRESH must be 1/true/yes or 0/false/no',
    })
    assert.deepEqual(parseCommandLine(['status', '--scope', 'a'], {}), {
      kind: 'error',
      message: "option '--scope' is not valid for 'status'",
    })
    assert.deepEqual(parseCommandLine([], {}), { kind: 'usage', help: false })
    assert.deepEqual(parseCommandLine(['--version'], {}), { kind: 'version' })
  })
})
