import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { lchown, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readSpoolStatus } from '../../src/telemetry/spool/spool-status.js'

const ROOT = new URL('../..', import.meta.url).pathname

interface Result {
  code: number | null
  out: string
  err: string
}

/** Runs the CLI from source; no IdP is needed: everything here fails or succeeds before a token. */
function cli(args: string[], env: NodeJS.ProcessEnv, input = ''): Promise<Result> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), ...args], {
    cwd: ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  child.stderr.on('data', (d) => {
    err += d
  })
  child.stdin.on('error', () => {})
  child.stdin.end(input)
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })))
}

describe('send and upload with a hostile spool or input (issue 11)', () => {
  let root: string
  let n = 0
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'edgetoken-hostile-'))
  })
  after(() => rm(root, { recursive: true, force: true }))

  /** A state directory with a spool, a file outside it (root's, when run as root), and the env. */
  async function setup(): Promise<{ env: NodeJS.ProcessEnv; state: string; spool: string; victim: string }> {
    const home = join(root, `h${n++}`)
    const state = join(home, 'state')
    const spool = join(state, 'spool')
    await mkdir(spool, { recursive: true, mode: 0o700 })
    const victim = join(home, 'victim.conf')
    await writeFile(victim, 'important=1\nroot-owned configuration\n', { mode: 0o644 })
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: home,
      XDG_CONFIG_HOME: join(home, 'config'),
      EDGETOKEN_STATE_DIR: state,
      EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9',
      EDGETOKEN_CLIENT_ID: 'hostile-test',
      EDGETOKEN_TELEMETRY_ENDPOINT: 'http://127.0.0.1:9/ingest',
    }
    return { env, state, spool, victim }
  }

  test('issue 11 #3: send refuses a spool segment symlinked to a file outside (exit 6); the file is unchanged', async () => {
    const { env, spool, victim } = await setup()
    await symlink(victim, join(spool, '00000000000000000000.seg'))
    const before = await readFile(victim)
    const r = await cli(['send'], env, '{"a":1}\n')
    assert.equal(r.code, 6, r.err)
    assert.match(
      r.err,
      /00000000000000000000\.seg is a symbolic link, which the spool never uses: remove it \(ELOOP\)/,
    )
    assert.deepEqual(await readFile(victim), before)
  })

  test('issue 11 #3: upload refuses a symlinked spool segment (exit 6); the file is not truncated', async () => {
    const { env, spool, victim } = await setup()
    await symlink(victim, join(spool, '00000000000000000000.seg'))
    const before = await readFile(victim)
    const r = await cli(['upload', '--json'], env)
    assert.equal(r.code, 6, r.err)
    assert.match(r.out, /"event":"error","code":"store"/)
    assert.deepEqual(await readFile(victim), before)
  })

  test('issue 11 #3: send refuses a spool directory symlinked elsewhere by another user (exit 2); nothing written there', async () => {
    const { env, spool } = await setup()
    const elsewhere = join(root, `elsewhere-${n}`)
    await mkdir(elsewhere, { mode: 0o700 })
    await rm(spool, { recursive: true })
    await symlink(elsewhere, spool)
    // As root (CI), make the link another user's, as an attacker's would be.
    if (process.getuid?.() === 0) await lchown(spool, 65534, 65534)
    const r = await cli(['send'], env, '{"a":1}\n')
    assert.equal(r.code, 2, r.err)
    assert.match(r.err, /spool directory .* is a symbolic link/)
    assert.deepEqual(await readdir(elsewhere), [])
  })

  test('issue 11 #8: one line nested 5000 deep is one invalid line: skip spools the others, reject exits 2', async () => {
    const { env, state } = await setup()
    // 30 KB, under the 64 KiB line cap; JSON.stringify overflows the stack on it.
    const deep = `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`
    const input = `{"n":1}\n${deep}\n{"n":2}\n`
    const rejected = await cli(['send'], env, input)
    assert.equal(rejected.code, 2, rejected.err)
    assert.match(rejected.err, /line 2: nested deeper than 64 levels/)
    assert.equal((await readSpoolStatus(state)).pending, 0)

    const skipped = await cli(['send', '--on-invalid', 'skip', '--json'], env, input)
    assert.equal(skipped.code, 0, skipped.err)
    const events = skipped.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(events, [
      { event: 'invalid_line', line: 2, message: 'nested deeper than 64 levels' },
      { event: 'spooled', records: 2, skipped: 1 },
    ])
    assert.equal((await readSpoolStatus(state)).pending, 2)
  })
})
