import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import { ExitCode, exitCodeFor } from '../../src/cli/exit-codes.js'
import { COMMANDS } from '../../src/cli/registry.js'
import { VERSION } from '../../src/version.js'
import { runMain } from '../support/cli.js'

describe('cli dispatch', () => {
  test('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string
    }
    assert.equal(VERSION, pkg.version)
    const r = await runMain(['--version'])
    assert.equal(r.code, 0)
    assert.equal(r.out, `${VERSION}\n`)
  })

  test('no command prints usage to stderr and exits 2; --help exits 0', async () => {
    const r = await runMain([])
    assert.equal(r.code, ExitCode.usage)
    assert.match(r.err, /Usage: edgetoken/)
    const h = await runMain(['--help'])
    assert.equal(h.code, 0)
    assert.match(h.out, /Exit codes/)
  })

  test('every command answers --help with exit 0', async () => {
    for (const name of Object.keys(COMMANDS)) {
      const r = await runMain([name, '--help'])
      assert.equal(r.code, 0, name)
      assert.match(r.out, new RegExp(`edgetoken ${name}`), name)
    }
  })

  test('unknown command and unknown option are usage errors (exit 2), one line, no stack', async () => {
    for (const argv of [['frobnicate'], ['token', '--bogus'], ['login', '--scope', 'x']]) {
      const r = await runMain(argv)
      assert.equal(r.code, 2, argv.join(' '))
      assert.equal(r.err.trim().split('\n').length, 1)
      assert.doesNotMatch(r.err, /\n\s+at /)
    }
  })

  test('with --json a usage error is an NDJSON error event on stdout', async () => {
    const r = await runMain(['frobnicate', '--json'])
    assert.equal(r.code, 2)
    const event = JSON.parse(r.out.trim()) as Record<string, unknown>
    assert.equal(event.event, 'error')
    assert.equal(event.code, 'config')
  })

  test('options may stand before the command', async () => {
    const r = await runMain(['--json', 'status', '--help'])
    assert.equal(r.code, 0)
  })

  test('options have environment variables; a flag wins over its variable', async () => {
    const json = await runMain(['frobnicate'], { EDGETOKEN_JSON: '1' })
    assert.equal(JSON.parse(json.out.trim()).event, 'error')
    const bad = await runMain(['status'], { EDGETOKEN_JSON: 'maybe' })
    assert.equal(bad.code, 2)
    assert.match(bad.err, /EDGETOKEN_JSON must be 1\/true\/yes or 0\/false\/no/)
    const ttl = await runMain(['token'], {
      EDGETOKEN_MIN_TTL_SECONDS: 'soon',
      EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9',
      EDGETOKEN_CLIENT_ID: 'c',
    })
    assert.equal(ttl.code, 2)
    assert.match(ttl.err, /--min-ttl-seconds must be a whole number/)
    const flagWins = await runMain(['token', '--min-ttl-seconds', 'later'], {
      EDGETOKEN_MIN_TTL_SECONDS: '5',
    })
    assert.match(flagWins.err, /got 'later'/)
  })

  test('--debug prints the stack of an unexpected error; without it, one line', async () => {
    const plain = await runMain(['token'], {
      EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9',
      EDGETOKEN_CLIENT_ID: 'c',
      EDGETOKEN_STATE_DIR: '/proc/version/x',
    })
    assert.equal(plain.err.trim().split('\n').length, 1, plain.err)
    const debug = await runMain(['token', '--debug'], {
      EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9',
      EDGETOKEN_CLIENT_ID: 'c',
      EDGETOKEN_STATE_DIR: '/proc/version/x',
    })
    assert.notEqual(plain.code, 0)
    assert.equal(debug.code, plain.code)
    assert.match(debug.err, /\n\s+at /)
  })

  test('exit codes follow the contract', () => {
    assert.equal(exitCodeFor('config'), 2)
    assert.equal(exitCodeFor('signin_required'), 3)
    assert.equal(exitCodeFor('denied'), 4)
    assert.equal(exitCodeFor('expired'), 4)
    assert.equal(exitCodeFor('cancelled'), 4)
    assert.equal(exitCodeFor('unavailable'), 5)
    assert.equal(exitCodeFor('store'), 6)
    assert.equal(exitCodeFor('internal'), 1)
  })
})
