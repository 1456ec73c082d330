/**
 * Issue 16: property-based test over the config file loader: arbitrary JSON (every key the rules
 * know, in its section or not, with valid and hostile values) and arbitrary bytes, written to a
 * temporary file and loaded the way every command loads it. Each load gives a frozen config whose
 * values meet the rules, or a ConfigError naming a key; a file over 1 MiB is refused before it is
 * parsed.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { loadConfig } from '../../src/config/load.js'
import { RULES } from '../../src/config/rules.js'
import { ConfigError } from '../../src/errors.js'
import { secureUrl } from '../../src/lib/url.js'
import { edgyJsonValue, forAll, label, mutatedObject, outcome, spyJsonParse } from '../support/property.js'

/** A valid value per key, so most files pass every rule but the one or two a mutation breaks. */
const VALID: Record<string, fc.Arbitrary<unknown>> = {
  authority: fc.constantFrom(
    'https://login.example.com',
    'http://127.0.0.1:9',
    'https://login.microsoftonline.com/common',
  ),
  clientId: fc.constantFrom('edgetoken-device', 'c1'),
  scopes: fc.constantFrom(['openid'], ['openid', 'telemetry:write'], []),
  deviceId: fc.constantFrom('gw-1', 'pi_2'),
  stateDir: fc.constantFrom('/var/lib/edgetoken', 'state'),
  keyFile: fc.constantFrom('/etc/edgetoken/key', 'key'),
  display: fc.constantFrom(['console'], ['console', 'qr'], []),
  timeoutSeconds: fc.integer({ min: 1, max: 3600 }),
  qrTheme: fc.constantFrom('auto', 'dark', 'light'),
  logLevel: fc.constantFrom('info', 'debug'),
  'mqtt.url': fc.constantFrom('mqtt://127.0.0.1:1883', 'mqtts://broker.example:8883'),
  'mqtt.topicPrefix': fc.constantFrom('edgetoken', 'site/a'),
  'mqtt.username': fc.constantFrom('u'),
  'mqtt.password': fc.constantFrom('p'),
  'mqtt.passwordFile': fc.constantFrom('/run/credentials/x'),
  'mqtt.protocolVersion': fc.constantFrom(4, 5),
  'mqtt.allowPair': fc.boolean(),
  'mqtt.subscriptions': fc.constantFrom([], ['zigbee2mqtt/+'], ['tele/+/SENSOR', '#']),
  'telemetry.endpoint': fc.constantFrom('https://api.example/ingest', 'http://127.0.0.1:8080/ingest?x=1'),
  'telemetry.batchMaxRecords': fc.integer({ min: 1, max: 1000 }),
  'telemetry.lingerMs': fc.integer({ min: 0, max: 60_000 }),
  'telemetry.spoolMaxBytes': fc.constantFrom(65_536, 64 * 1024 * 1024),
}

/** Sectioned the way the file is written: `mqtt.url` goes to `{"mqtt":{"url":...}}`. */
function nest(flat: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(flat)) {
    const dot = key.indexOf('.')
    if (dot < 0 || !/^(mqtt|telemetry)\./.test(key)) {
      out[key] = value
      continue
    }
    const section = key.slice(0, dot)
    const current = out[section]
    const holder = typeof current === 'object' && current !== null && !Array.isArray(current) ? current : {}
    out[section] = { ...(holder as Record<string, unknown>), [key.slice(dot + 1)]: value }
  }
  return out
}

const keys = RULES.map((r) => r.key).filter((k) => k in VALID)
const configs = fc
  .tuple(
    fc.subarray(keys, { minLength: 0 }),
    mutatedObject(VALID, {
      'mqtt.subscriptions': fc.constantFrom(['edgetoken/+/readings'], ['a/#/b'], ['a+'], [''], 'x'),
      'mqtt.url': fc.constantFrom('http://broker', 'mqtt://', 'ws://127.0.0.1'),
      authority: fc.constantFrom('http://idp.example', 'https://u:p@idp.example', 'https://idp.example#f'),
      scopes: fc.constantFrom(['a b'], [''], [1]),
      deviceId: fc.constantFrom('a/b', '+', '#', ''),
    }),
  )
  .map(([chosen, values]) => {
    const flat: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(values)) if (chosen.includes(k) || !(k in VALID)) flat[k] = v
    return nest(flat)
  })

const files = fc.oneof(
  { arbitrary: configs.map((c) => Buffer.from(JSON.stringify(c))), weight: 8 },
  // A section that is not an object, a non-object file, JSON with a BOM, truncated JSON, bytes.
  {
    arbitrary: fc
      .record({ mqtt: edgyJsonValue(), telemetry: edgyJsonValue() }, { requiredKeys: [] })
      .map((c) => Buffer.from(JSON.stringify(c))),
    weight: 1,
  },
  { arbitrary: edgyJsonValue(3).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')), weight: 1 },
  { arbitrary: configs.map((c) => Buffer.from(`\ufeff${JSON.stringify(c)}`)), weight: 1 },
  {
    arbitrary: fc.tuple(configs, fc.nat()).map(([c, n]) => Buffer.from(JSON.stringify(c).slice(0, n % 40))),
    weight: 1,
  },
  { arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), weight: 1 },
)

describe('issue 16: property test over the config file', () => {
  test('any config file loads to a frozen config that meets the rules, or a ConfigError; over 1 MiB never parsed', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-config-property-'))
    t.after(() => rm(dir, { recursive: true, force: true }))
    const file = join(dir, 'config.json')
    const env = { HOME: join(dir, 'home'), XDG_CONFIG_HOME: join(dir, 'xdg') }
    const spy = spyJsonParse()
    t.after(() => spy.restore())
    await forAll(
      t,
      'config file',
      fc.oneof(
        { arbitrary: files, weight: 40 },
        {
          arbitrary: fc.integer({ min: 1, max: 4096 }).map((n) => Buffer.alloc(1024 * 1024 + n, 0x20)),
          weight: 1,
        },
      ),
      async (bytes) => {
        await writeFile(file, bytes, { mode: 0o600 })
        spy.reset()
        const result = await outcome(() =>
          loadConfig({ options: { config: file }, env, cwd: dir, warn: () => {} }),
        )
        if (bytes.length > 1024 * 1024) {
          assert.equal(spy.lengths.length, 0, 'a file over 1 MiB was parsed')
          assert.ok(!result.ok && /larger than 1 MiB/.test(result.error.message))
          return 'over 1 MiB'
        }
        if (!result.ok) {
          assert.ok(result.error instanceof ConfigError, `not a ConfigError: ${result.error.code}`)
          assert.match(result.error.message, /^config: /)
          return label(result)
        }
        const config = result.value
        assert.ok(
          Object.isFrozen(config) &&
            Object.isFrozen(config.scopes) &&
            Object.isFrozen(config.telemetry ?? {}),
        )
        assert.ok(config.scopes.includes('offline_access'))
        if (config.authority !== undefined) assert.ok(secureUrl(config.authority))
        const endpoint = config.telemetry?.endpoint
        if (endpoint !== undefined) assert.ok(secureUrl(endpoint))
        assert.match(config.deviceId, /^[^/+#]+$/)
        if (config.mqtt) assert.match(config.mqtt.url, /^mqtts?:\/\//)
        return 'accepted'
      },
      { numRuns: 400 },
    )
  })
})
