import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseArgs } from 'node:util'
import { closest, parseCommandLine, parseSimple, parseTokens } from '../../src/cli/command-line.js'
import type { OptionSpec } from '../../src/cli/context.js'
import { COMMANDS, GLOBAL_OPTIONS, SHORT_ALIASES } from '../../src/cli/registry.js'

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
    // The cached `token` path reads argv with parseSimple first, the full CLI then with parseTokens:
    // wherever the first answers, the second says the same.
    for (const argv of answered) {
      const full = parseTokens(argv, ALL, SHORT_ALIASES)
      assert.ok(!('error' in full))
      assert.deepStrictEqual({ values: full.values, positionals: full.positionals }, parseSimple(argv, ALL))
      assert.deepEqual(full.unknown, [])
    }
  })

  test('issue 11 #2: the full parser reads what parseArgs reads, the same way', () => {
    for (const argv of [
      ['--json', 'token'],
      ['token', '-h'],
      ['-V'],
      ['token', '--', '--json'],
      ['token', 'extra'],
      ['token', '--scope', 'a', '--scope=b'],
      ['token', '--min-ttl-seconds', '60', '--min-ttl-seconds=90'],
      ['token', '--min-ttl-seconds=-1'],
      ['--config', '/a b/c.json', 'status', '--state-dir=/x'],
      ['token', '-'],
      ['-hV', 'token'],
    ]) {
      const full = parseTokens(argv, ALL, SHORT_ALIASES)
      assert.ok(!('error' in full), argv.join(' '))
      assert.deepEqual(full.unknown, [], argv.join(' '))
      const node = parseArgs({ args: argv, options: ALL, allowPositionals: true, strict: true })
      assert.deepStrictEqual(
        { values: full.values, positionals: full.positionals },
        { ...node },
        argv.join(' '),
      )
    }
  })

  test('issue 11 #2: unknown flags are collected for the caller, bad values are named', () => {
    const parsed = parseTokens(['--jsn', 'token', '-x', '--constructor'], ALL, SHORT_ALIASES)
    assert.ok(!('error' in parsed))
    assert.deepEqual(parsed.unknown, ['--jsn', '-x', '--constructor'])
    assert.deepEqual(parsed.positionals, ['token'])
    assert.deepEqual(parseTokens(['token', '--scope'], ALL), { error: "option '--scope' needs a value" })
    assert.deepEqual(parseTokens(['token', '--scope', '--json'], ALL), {
      error: "option '--scope' needs a value (to pass one that starts with '-', write --scope=--json)",
    })
    assert.deepEqual(parseTokens(['token', '--json=yes'], ALL), { error: "option '--json' takes no value" })
  })

  test('issue 11 #2: suggestions are the closest command or option by edit distance', () => {
    const commands = Object.keys(COMMANDS)
    assert.equal(closest('logn', commands), 'login')
    assert.equal(closest('lgoin', commands), 'login')
    assert.equal(closest('stauts', commands), 'status')
    assert.equal(closest('sned', commands), 'send')
    assert.equal(closest('up', commands), 'upload')
    assert.equal(closest('frobnicate', commands), undefined)
    assert.equal(closest('x', commands), undefined)
    assert.equal(closest('jsn', Object.keys(ALL)), 'json')
    assert.equal(closest('force', Object.keys(ALL)), 'force-refresh')
  })

  test('flags win over their environment variables; bad input is a usage error naming it', () => {
    const line = parseCommandLine(['token', '--min-ttl-seconds', '60'], {
      EDGETOKEN_MIN_TTL_SECONDS: '900',
      EDGETOKEN_JSON: 'yes',
    })
    assert.equal(line.kind, 'command')
    assert.equal(line.kind === 'command' && line.options['min-ttl-seconds'], '60')
    assert.equal(line.kind === 'command' && line.options.json, true)
    assert.deepEqual(parseCommandLine(['token', '--constructor'], {}), {
      kind: 'error',
      message: "unknown option '--constructor' for token. Run 'edgetoken token --help'.",
    })
    assert.deepEqual(parseCommandLine(['token'], { EDGETOKEN_FORCE_REFRESH: 'maybe' }), {
      kind: 'error',
      message: 'EDGETOKEN_FORCE_REFRESH must be 1/true/yes or 0/false/no',
    })
    assert.deepEqual(parseCommandLine(['status', '--scope', 'a'], {}), {
      kind: 'error',
      message: "option '--scope' is not valid for status. Run 'edgetoken status --help'.",
    })
    assert.deepEqual(parseCommandLine([], {}), { kind: 'usage', help: false })
    assert.deepEqual(parseCommandLine(['--version'], {}), { kind: 'version' })
  })

  test('issue 11 #2: help, -h, -V and -v do what people expect', () => {
    assert.deepEqual(parseCommandLine(['help'], {}), { kind: 'usage', help: true })
    assert.deepEqual(parseCommandLine(['-h'], {}), { kind: 'usage', help: true })
    const help = parseCommandLine(['help', 'login'], {})
    assert.ok(help.kind === 'help' && help.name === 'login' && help.entry === COMMANDS.login)
    for (const flag of ['-V', '-v', '--version'])
      assert.deepEqual(parseCommandLine([flag], {}), { kind: 'version' })
    const h = parseCommandLine(['token', '-h'], {})
    assert.ok(h.kind === 'command' && h.options.help === true)
  })

  test('issue 11 #2: an unknown command or option suggests the closest one, never parseArgs wording', () => {
    const cases: [string[], string][] = [
      [['logn'], "unknown command 'logn': did you mean 'login'? Run 'edgetoken --help'."],
      [['help', 'stauts'], "unknown command 'stauts': did you mean 'status'? Run 'edgetoken --help'."],
      [['frobnicate', '--jsn'], "unknown command 'frobnicate'. Run 'edgetoken --help'."],
      [
        ['token', '--jsn'],
        "unknown option '--jsn' for token: did you mean '--json'? Run 'edgetoken token --help'.",
      ],
      [
        ['--jsn', 'token'],
        "unknown option '--jsn' for token: did you mean '--json'? Run 'edgetoken token --help'.",
      ],
      [['--jsn'], "unknown option '--jsn': did you mean '--json'? Run 'edgetoken --help'."],
      [['status', '-x'], "unknown option '-x' for status. Run 'edgetoken status --help'."],
      [['log\u001b[2Jin'], "unknown command 'log?[2Jin'. Run 'edgetoken --help'."],
    ]
    for (const [argv, message] of cases) {
      assert.deepEqual(parseCommandLine(argv, {}), { kind: 'error', message }, argv.join(' '))
    }
  })

  test('issue 11 #2: extra positional arguments are a usage error', () => {
    assert.deepEqual(parseCommandLine(['status', 'now'], {}), {
      kind: 'error',
      message: "status takes no arguments (got 'now'). Run 'edgetoken status --help'.",
    })
    assert.deepEqual(parseCommandLine(['help', 'login', 'now'], {}), {
      kind: 'error',
      message: "help takes one command name (got 'now'). Run 'edgetoken --help'.",
    })
    assert.equal(parseCommandLine(['token', 'extra'], {}).kind, 'error')
  })
})
