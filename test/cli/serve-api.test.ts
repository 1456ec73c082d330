import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url))

/** A real access token from the IdP: device flow driven over HTTP, approved headlessly. */
async function deviceFlowToken(idp: TestIdp): Promise<string> {
  const auth = await fetch(new URL('/device/auth', idp.issuer), {
    method: 'POST',
    body: new URLSearchParams({
      client_id: idp.publicClientId,
      scope: `openid offline_access ${idp.apiScope}`,
    }),
  })
  const flow = (await auth.json()) as { device_code: string; user_code: string }
  await approveDevice(idp.issuer, flow.user_code)
  const token = await fetch(new URL('/token', idp.issuer), {
    method: 'POST',
    body: new URLSearchParams({
      client_id: idp.publicClientId,
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
      device_code: flow.device_code,
    }),
  })
  const body = (await token.json()) as { access_token?: string }
  assert.ok(body.access_token, 'the IdP issued an access token')
  return body.access_token
}

interface Served {
  child: ChildProcess
  url: string
  stdout: () => string
  stderr: () => string
}

async function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve-api', ...args], {
    cwd: ROOT,
    env: { ...process.env, EDGETOKEN_CONFIG: '/nonexistent/edgetoken.json' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stderr?.on('data', (d) => {
    err += d
  })
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d) => {
      out += d
      const match = /"event":"listening","url":"([^"]+)"/.exec(out)
      if (match?.[1]) resolve(match[1])
    })
    child.once('exit', (code) => reject(new Error(`serve-api exited ${code}: ${err}`)))
  })
  return { child, url, stdout: () => out, stderr: () => err }
}

function batch(seq: number) {
  return {
    device_id: 'gw-1',
    batch_id: `b-${seq}`,
    seq,
    records: [{ sensor: 's', at: '2026-11-25T10:00:00Z', values: { t: seq } }],
  }
}

describe('edgetoken serve-api', () => {
  let idp: TestIdp
  let token: string
  let served: Served

  before(async () => {
    idp = await startTestIdp()
    token = await deviceFlowToken(idp)
    served = await serve(['--port', '0', '--issuer', idp.issuer, '--audience', idp.audience, '--json'])
  })
  after(async () => {
    if (served.child.exitCode === null) served.child.kill('SIGKILL')
    await idp.close()
  })

  test('accepts a batch with a real access token and logs one line without the token', async () => {
    const res = await fetch(served.url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        'idempotency-key': 'b-1',
      },
      body: JSON.stringify(batch(1)),
    })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { accepted: 1 })
    // The log line is written before the answer; give the pipe a moment.
    for (let i = 0; i < 50 && !served.stderr().includes('batch b-1'); i++)
      await new Promise((r) => setTimeout(r, 20))
    assert.match(served.stderr(), /batch b-1 seq 1: 1 records from gw-1/)
    assert.match(served.stdout(), /"event":"batch","device_id":"gw-1","batch_id":"b-1","seq":1,"records":1/)
    assert.ok(!served.stderr().includes(token) && !served.stdout().includes(token), 'token never logged')
  })

  test('refuses a request without a token (401) and a token for another audience', async () => {
    const bare = await fetch(served.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'b-2' },
      body: JSON.stringify(batch(2)),
    })
    assert.equal(bare.status, 401)
    assert.match(bare.headers.get('www-authenticate') ?? '', /^Bearer/)
    const other = await idp.signAccessToken({ aud: idp.otherAudience })
    const wrong = await fetch(served.url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${other}`,
        'content-type': 'application/json',
        'idempotency-key': 'b-3',
      },
      body: JSON.stringify(batch(3)),
    })
    assert.equal(wrong.status, 401)
    assert.ok(!served.stderr().includes('batch b-3'))
  })

  test('SIGTERM stops it with exit 0', async () => {
    const exited = once(served.child, 'exit')
    served.child.kill('SIGTERM')
    const [code] = (await exited) as [number | null]
    assert.equal(code, 0)
  })

  test('without an audience it is a usage error (exit 2)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve-api', '--issuer', idp.issuer], {
      cwd: ROOT,
      env: { ...process.env, EDGETOKEN_CONFIG: '/nonexistent/edgetoken.json', EDGETOKEN_API_AUDIENCE: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let err = ''
    child.stderr?.on('data', (d) => {
      err += d
    })
    const [code] = (await once(child, 'exit')) as [number | null]
    assert.equal(code, 2)
    assert.match(err, /audience/)
  })

  test('a bad port is a usage error (exit 2)', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CLI, 'serve-api', '--port', '70000', '--issuer', idp.issuer, '--audience', 'a'],
      { cwd: ROOT, stdio: 'ignore' },
    )
    const [code] = (await once(child, 'exit')) as [number | null]
    assert.equal(code, 2)
  })
})
