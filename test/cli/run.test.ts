/**
 * `edgetoken run` and an unreadable token store (issue 11 #2): a store sealed under another key
 * is not something a retry can fix, and systemd must not restart into it
 * (`RestartPreventExitStatus=6`): exit 6 with the one-line store message, at the start and when
 * found later, after MQTT and the uploads were shut down.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { collect, newTestDevice, runCli, seedCachedToken, spawnCli } from '../support/cli.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'
import { startRecorder } from '../support/mqtt-recorder.js'

/** Never contacted: the store fails before any request. */
const AUTHORITY = 'http://127.0.0.1:9/'

describe('edgetoken run: token store under another key', { timeout: 60_000 }, () => {
  let root: string
  let broker: TestBroker

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'edgetoken-run-'))
    broker = await startBroker()
  })
  after(async () => {
    await broker?.close()
    await rm(root, { recursive: true, force: true })
  })

  /** A key file other than the device's. */
  async function otherKey(): Promise<string> {
    const file = join(root, `key-${randomBytes(4).toString('hex')}`)
    await writeFile(file, randomBytes(32), { mode: 0o600 })
    return file
  }

  function assertStoreLine(stderr: string, storePath: string): void {
    const last = stderr.trim().split('\n').at(-1) ?? ''
    assert.match(last, /^edgetoken: token store /, stderr)
    assert.ok(last.includes(storePath), `the message names the store: ${last}`)
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace')
  }

  test('issue 11 #2: a store under another key at the start exits 6 at once, nothing started', async () => {
    const device = newTestDevice(root, { issuer: AUTHORITY })
    await seedCachedToken(device)
    const result = await runCli(['run'], {
      env: {
        ...device.env,
        EDGETOKEN_KEY_FILE: await otherKey(),
        EDGETOKEN_MQTT_URL: broker.url,
      },
      timeoutMs: 20_000,
    })
    assert.equal(result.code, 6, result.stderr)
    assertStoreLine(result.stderr, join(device.stateDir, 'tokens.store'))
    assert.doesNotMatch(result.stderr, /agent running|retrying/, 'failed before starting anything')
  })

  test('issue 11 #2: a store found unreadable later (an upload asks for a token) exits 6 after a clean MQTT shutdown', async () => {
    const device = newTestDevice(root, { issuer: AUTHORITY })
    await seedCachedToken(device)
    const deviceId = device.env.EDGETOKEN_DEVICE_ID
    const child = spawnCli(['run', '--json'], {
      env: {
        ...device.env,
        EDGETOKEN_MQTT_URL: broker.url,
        EDGETOKEN_TELEMETRY_ENDPOINT: 'http://127.0.0.1:9/ingest',
        EDGETOKEN_TELEMETRY_LINGER_MS: '0',
      },
    })
    const done = collect(child, { timeoutMs: 30_000 })
    let stdout = ''
    child.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString()
    })
    const deadline = Date.now() + 20_000
    while (!stdout.includes('"event":"ready"')) {
      if (child.exitCode !== null || Date.now() > deadline)
        assert.fail(`no ready event: ${(await done).stderr}`)
      await new Promise((r) => setTimeout(r, 50))
    }

    // The store is replaced by one sealed under another key (a backup from another gateway).
    const foreign = newTestDevice(root, {
      issuer: AUTHORITY,
      extra: { EDGETOKEN_KEY_FILE: await otherKey() },
    })
    await seedCachedToken(foreign)
    const storePath = join(device.stateDir, 'tokens.store')
    await rename(join(foreign.stateDir, 'tokens.store'), storePath)

    // A reading makes the uploader ask for a token, which reads the store.
    const sensor = await mqtt.connectAsync(broker.url, clientOptions(broker))
    await sensor.publishAsync(
      `edgetoken/${deviceId}/readings`,
      JSON.stringify({ sensor: 's1', at: new Date().toISOString(), values: { t: 21.5 } }),
      { qos: 1 },
    )
    await sensor.endAsync()

    const started = Date.now()
    const result = await done
    assert.equal(result.code, 6, result.stderr)
    assert.ok(Date.now() - started < 10_000, 'stopped within seconds, not retrying')
    assertStoreLine(result.stderr, storePath)
    assert.match(result.stderr, /token store cannot be read any more; stopping/)
    assert.match(result.stdout, /"event":"stopped"/, 'the ordinary shutdown ran')
    // The shutdown published the retained `offline` status before closing the connection.
    const rec = await startRecorder(broker, `edgetoken/${deviceId}/status`)
    try {
      await rec.settle()
      assert.deepEqual(
        rec.messages.filter((m) => m.retain).map((m) => m.payload.toString()),
        ['offline'],
      )
    } finally {
      await rec.close()
    }
  })
})
