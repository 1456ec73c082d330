import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { ExitCode, exitCodeFor } from '../../src/cli/exit-codes.js'
import { shellQuote } from '../../src/cli/hints.js'
import { COMMANDS } from '../../src/cli/registry.js'
import { VERSION } from '../../src/version.js'
import { newTestDevice, runMain, seedCachedToken } from '../support/cli.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken main-'))
after(() => rmSync(root, { recursive: true, force: true }))

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
    for (const argv of [['frobnicate'], ['token', '--bogus'], ['login', '--scope', 'x'], ['status', 'x']]) {
      const r = await runMain(argv)
      assert.equal(r.code, 2, argv.join(' '))
      assert.equal(r.err.trim().split('\n').length, 1)
      assert.doesNotMatch(r.err, /\n\s+at /)
    }
  })

  test('issue 11 #2: a typo gets the closest command or option, in our words', async () => {
    const r = await runMain(['logn'])
    assert.equal(r.code, 2)
    assert.equal(r.err, "edgetoken: unknown command 'logn': did you mean 'login'? Run 'edgetoken --help'.\n")
    const o = await runMain(['token', '--jsn'])
    assert.equal(o.code, 2)
    assert.equal(
      o.err,
      "edgetoken: unknown option '--jsn' for token: did you mean '--json'? Run 'edgetoken token --help'.\n",
    )
  })

  test('issue 11 #2: help, help COMMAND, -h, -V and -v', async () => {
    const help = await runMain(['help'])
    assert.equal(help.code, 0)
    assert.match(help.out, /^Usage: edgetoken <command>/)
    assert.match(help.out, /\n {2}help +this text, or a command's help/)
    const login = await runMain(['help', 'login'])
    assert.equal(login.code, 0)
    assert.equal(login.out, (await runMain(['login', '--help'])).out)
    assert.match(login.out, /^Usage: edgetoken login/)
    assert.equal((await runMain(['-h'])).out, help.out)
    assert.equal((await runMain(['status', '-h'])).out, (await runMain(['help', 'status'])).out)
    for (const flag of ['-V', '-v'])
      assert.deepEqual(await runMain([flag]), { code: 0, out: `${VERSION}\n`, err: '' })
  })

  test('issue 11 #2: the exit-3 hint repeats the --config and --state-dir given, quoted for the shell', async () => {
    const d = newTestDevice(root, { issuer: 'http://127.0.0.1:9' })
    const config = join(root, "it's config.json")
    writeFileSync(config, JSON.stringify({ authority: 'http://127.0.0.1:9', clientId: 'c' }))
    const stateDir = join(root, 'state dir')
    const r = await runMain(['token', '--config', config, '--state-dir', stateDir], d.env)
    assert.equal(r.code, 3, r.err)
    assert.equal(
      r.err,
      `edgetoken: not signed in; run: edgetoken --config ${shellQuote(config)} --state-dir '${stateDir}' login\n`,
    )
    assert.equal(shellQuote(config), `'${config.replace("'", "'\\''")}'`)
    // Without flags, the variables stay where they are: the hint is the bare command.
    const plain = await runMain(['token'], d.env)
    assert.equal(plain.err, 'edgetoken: not signed in; run: edgetoken login\n')
  })

  test('issue 11 #2: exit 6 says how to recover, naming the store file and the sign-in command', async () => {
    const d = newTestDevice(root, { issuer: 'http://127.0.0.1:9' })
    await seedCachedToken(d)
    const otherKey = join(root, 'other.key')
    writeFileSync(otherKey, Buffer.alloc(48, 7), { mode: 0o600 })
    const r = await runMain(['token', '--state-dir', d.stateDir], { ...d.env, EDGETOKEN_KEY_FILE: otherKey })
    assert.equal(r.code, 6, r.err)
    const store = join(d.stateDir, 'tokens.store')
    assert.equal(
      r.err,
      `edgetoken: token store ${store} was encrypted with a different key (check EDGETOKEN_KEY_FILE or the edgetoken.key credential). To recover: restore the key that wrote it, or remove ${shellQuote(store)} and run: edgetoken --state-dir ${shellQuote(d.stateDir)} login\n`,
    )
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
