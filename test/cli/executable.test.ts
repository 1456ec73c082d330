/**
 * The executable itself (src/cli.ts, built into the CommonJS dist/cli.js): its cached `token`
 * answer writes to file descriptor 1 directly, so what a stdout stream would handle is tested here:
 * a closed pipe, a full non-blocking pipe. And the build's two module formats.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { VERSION } from '../../src/version.js'
import { cliCommand, cliEnv, newTestDevice, ROOT, runCli, seedCachedToken } from '../support/cli.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-executable-'))
after(() => rmSync(root, { recursive: true, force: true }))

// No request is made on the cached path: the authority only names the account (a closed port).
const ISSUER = 'http://127.0.0.1:9'

async function signedInDevice() {
  const device = newTestDevice(root, { issuer: ISSUER })
  return { device, ...(await seedCachedToken(device)) }
}

// Fills a pipe, makes its write end non-blocking (as a Node parent's own stdout pipe is), starts
// the CLI on it, and only then drains it: the CLI's first write meets EAGAIN.
const FULL_PIPE = `
import fcntl, json, os, subprocess, sys, time
r, w = os.pipe()
fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
filled = 0
for size in (65536, 4096, 1):
    while True:
        try:
            filled += os.write(w, b"x" * size)
        except BlockingIOError:
            break
child = subprocess.Popen(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)
os.close(w)
time.sleep(1.5)
data = b""
while True:
    chunk = os.read(r, 65536)
    if not chunk:
        break
    data += chunk
err = child.stderr.read().decode()
print(json.dumps({"code": child.wait(timeout=30), "tail": data[filled:].decode(), "stderr": err}))
`

describe('the executable', () => {
  test('a closed stdout pipe (`token | true`) is no error: exit 0, nothing on stderr', async () => {
    const { device } = await signedInDevice()
    const r = spawnSync('bash', ['-c', 'set -o pipefail; "$@" | true', 'bash', ...cliCommand(), 'token'], {
      env: cliEnv({ env: device.env }),
      encoding: 'utf8',
      timeout: 60_000,
    })
    assert.equal(r.stderr, '')
    assert.equal(r.status, 0)
  })

  test('a full non-blocking stdout pipe gets the whole token once it drains (EAGAIN)', async () => {
    const { device, token } = await signedInDevice()
    const r = spawnSync('python3', ['-c', FULL_PIPE, ...cliCommand(), 'token'], {
      env: cliEnv({ env: device.env }),
      encoding: 'utf8',
      timeout: 60_000,
    })
    assert.equal(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { code: number; tail: string; stderr: string }
    assert.equal(out.stderr, '')
    assert.equal(out.code, 0)
    assert.equal(out.tail, `${token}\n`)
  })

  test('dist/cli.js is one CommonJS file; the library in dist/lib stays ES modules', async (t) => {
    if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
      t.skip('dist/cli.js is not built (npm run build)')
      return
    }
    const format = (dir: string) =>
      (JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as { type: string }).type
    assert.equal(format('dist'), 'commonjs')
    assert.equal(format('dist/lib'), 'module')
    const { device, token } = await signedInDevice()
    const cached = await runCli(['token'], { env: device.env, entry: 'dist' })
    assert.deepEqual([cached.code, cached.stdout, cached.stderr], [0, `${token}\n`, ''])
    // Everything else is the full CLI, loaded from dist/lib.
    const version = await runCli(['--version'], { entry: 'dist' })
    assert.deepEqual([version.code, version.stdout], [0, `${VERSION}\n`])
    const status = await runCli(['status', '--json'], { env: device.env, entry: 'dist' })
    assert.equal(status.code, 0, status.stderr)
    assert.match(status.stdout, /"signed_in":true/)
    const lib = (await import(join(ROOT, 'dist', 'lib', 'index.js'))) as Record<string, unknown>
    assert.equal(typeof lib.PublicClient, 'function')
  })
})
