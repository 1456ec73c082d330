import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { defaultDeviceId, defaultStateDir, loadConfig, requireIdentity } from '../../src/config/load.js'
import { ConfigError, isEdgeTokenError } from '../../src/errors.js'

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgetoken-config-'))
})
after(() => rm(dir, { recursive: true, force: true }))

let n = 0
async function withFile(content: unknown): Promise<string> {
  n += 1
  const file = join(dir, `config-${n}.json`)
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content))
  return file
}

/** An environment that cannot pick up a config file or state dir from the machine running the tests. */
function isolatedEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { HOME: join(dir, 'home'), XDG_CONFIG_HOME: join(dir, 'xdg-config'), ...extra }
}

async function rejects(
  source: { options?: Record<string, string>; env?: NodeJS.ProcessEnv; file?: unknown },
  message: string | RegExp,
  code = 'ERR_CONFIG',
) {
  const env = isolatedEnv(source.env)
  if (source.file !== undefined) env.EDGETOKEN_CONFIG = await withFile(source.file)
  await assert.rejects(loadConfig({ options: source.options ?? {}, env, cwd: dir }), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    assert.equal(err.code, code)
    assert.equal(err.category, 'config')
    if (typeof message === 'string') assert.equal(err.message, message)
    else assert.match(err.message, message)
    assert.doesNotMatch(err.message, /\n/)
    return true
  })
}

describe('loadConfig: precedence flag > env > file > default', () => {
  test('defaults with no file and no environment', async () => {
    const config = await loadConfig({ options: {}, env: isolatedEnv(), cwd: dir })
    assert.equal(config.authority, undefined)
    assert.equal(config.configFile, undefined)
    assert.deepEqual(config.scopes, ['openid', 'profile', 'offline_access'])
    assert.deepEqual(config.display, ['console', 'qr'])
    assert.equal(config.stateDir, join(dir, 'home', '.local', 'share', 'edgetoken'))
    assert.match(config.deviceId, /^[A-Za-z0-9_-]{1,64}$/)
    assert.equal(config.mqtt, undefined)
    assert.deepEqual(config.telemetry, {
      endpoint: undefined,
      batchMaxRecords: 500,
      lingerMs: 1000,
      spoolMaxBytes: 64 * 1024 * 1024,
    })
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.scopes) && Object.isFrozen(config.telemetry))
  })

  test('the file is used; env overrides it; flags override env', async () => {
    const file = await withFile({
      authority: 'https://idp.example.com/tenant',
      clientId: 'from-file',
      scopes: ['api://x/read'],
      deviceId: 'file-device',
      stateDir: 'state-from-file',
      display: ['console'],
      timeoutSeconds: 30,
      mqtt: { url: 'mqtt://127.0.0.1:1883', topicPrefix: 'site/a' },
    })
    const fromFile = await loadConfig({ options: { config: file }, env: isolatedEnv(), cwd: '/' })
    assert.equal(fromFile.configFile, file)
    assert.equal(fromFile.authority, 'https://idp.example.com/tenant')
    assert.equal(fromFile.clientId, 'from-file')
    assert.deepEqual(fromFile.scopes, ['api://x/read', 'offline_access'])
    assert.equal(fromFile.deviceId, 'file-device')
    // Relative paths in the file are relative to the file, not the cwd.
    assert.equal(fromFile.stateDir, join(dir, 'state-from-file'))
    assert.deepEqual(fromFile.display, ['console'])
    assert.equal(fromFile.timeoutSeconds, 30)
    assert.deepEqual(fromFile.mqtt, {
      url: 'mqtt://127.0.0.1:1883',
      topicPrefix: 'site/a',
      caFile: undefined,
      certFile: undefined,
      keyFile: undefined,
      username: undefined,
      password: undefined,
      passwordFile: undefined,
      protocolVersion: undefined,
      allowPair: false,
      subscriptions: [],
    })

    const env = isolatedEnv({
      EDGETOKEN_CONFIG: file,
      EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9000',
      EDGETOKEN_CLIENT_ID: 'from-env',
      EDGETOKEN_SCOPES: ' openid  telemetry:write ',
      EDGETOKEN_DEVICE_ID: 'env-device',
      EDGETOKEN_STATE_DIR: 'env-state',
      EDGETOKEN_DISPLAY: 'qr,mqtt',
      EDGETOKEN_TIMEOUT_SECONDS: '60',
      EDGETOKEN_MQTT_TOPIC_PREFIX: 'env-prefix',
      EDGETOKEN_MQTT_ALLOW_PAIR: 'true',
      EDGETOKEN_TELEMETRY_ENDPOINT: 'https://api.example.com/ingest',
      EDGETOKEN_KEY_FILE: '/run/key',
    })
    const fromEnv = await loadConfig({ options: {}, env, cwd: '/srv' })
    assert.equal(fromEnv.authority, 'http://127.0.0.1:9000')
    assert.equal(fromEnv.clientId, 'from-env')
    assert.deepEqual(fromEnv.scopes, ['openid', 'telemetry:write', 'offline_access'])
    assert.equal(fromEnv.deviceId, 'env-device')
    assert.equal(fromEnv.stateDir, '/srv/env-state')
    assert.deepEqual(fromEnv.display, ['qr', 'mqtt'])
    assert.equal(fromEnv.timeoutSeconds, 60)
    assert.equal(fromEnv.mqtt?.topicPrefix, 'env-prefix')
    assert.equal(fromEnv.mqtt?.url, 'mqtt://127.0.0.1:1883')
    assert.equal(fromEnv.mqtt?.allowPair, true)
    assert.equal(fromEnv.telemetry?.endpoint, 'https://api.example.com/ingest')
    assert.equal(fromEnv.keyFile, '/run/key')

    const fromFlags = await loadConfig({
      options: { 'state-dir': '/flag/state', display: 'none', 'timeout-seconds': '5' },
      env,
      cwd: '/srv',
    })
    assert.equal(fromFlags.stateDir, '/flag/state')
    assert.deepEqual(fromFlags.display, [])
    assert.equal(fromFlags.timeoutSeconds, 5)
    assert.equal(fromFlags.clientId, 'from-env')
  })

  test('--config wins over EDGETOKEN_CONFIG', async () => {
    const a = await withFile({ clientId: 'a' })
    const b = await withFile({ clientId: 'b' })
    const config = await loadConfig({ options: { config: b }, env: isolatedEnv({ EDGETOKEN_CONFIG: a }) })
    assert.equal(config.clientId, 'b')
  })

  test('the default config file is found under XDG_CONFIG_HOME', async () => {
    const xdg = join(dir, 'xdg-found')
    await import('node:fs/promises').then((fs) => fs.mkdir(join(xdg, 'edgetoken'), { recursive: true }))
    await writeFile(join(xdg, 'edgetoken', 'config.json'), JSON.stringify({ clientId: 'xdg' }))
    const config = await loadConfig({ options: {}, env: isolatedEnv({ XDG_CONFIG_HOME: xdg }) })
    assert.equal(config.clientId, 'xdg')
    assert.equal(config.configFile, join(xdg, 'edgetoken', 'config.json'))
  })

  test('an mqtt url adds the mqtt display by default; offline_access is not duplicated', async () => {
    const config = await loadConfig({
      options: {},
      env: isolatedEnv({ EDGETOKEN_MQTT_URL: 'mqtts://broker:8883', EDGETOKEN_SCOPES: 'offline_access a' }),
    })
    assert.deepEqual(config.display, ['console', 'qr', 'mqtt'])
    assert.deepEqual(config.scopes, ['offline_access', 'a'])
  })

  test('stateDir: STATE_DIRECTORY (systemd), then XDG_DATA_HOME', () => {
    assert.equal(
      defaultStateDir({ STATE_DIRECTORY: '/var/lib/edgetoken:/var/lib/other' }),
      '/var/lib/edgetoken',
    )
    assert.equal(defaultStateDir({ XDG_DATA_HOME: '/data', HOME: '/home/u' }), '/data/edgetoken')
    assert.equal(defaultStateDir({ HOME: '/home/u' }), '/home/u/.local/share/edgetoken')
  })

  test('stateDir from the file wins over STATE_DIRECTORY', async () => {
    const file = await withFile({ stateDir: '/from/file' })
    const config = await loadConfig({
      options: { config: file },
      env: isolatedEnv({ STATE_DIRECTORY: '/var/lib/edgetoken' }),
    })
    assert.equal(config.stateDir, '/from/file')
  })

  test('deviceId default: the host name made topic-safe', () => {
    assert.equal(defaultDeviceId('pi.site-a.example.com'), 'pi-site-a-example-com')
    assert.equal(defaultDeviceId('weird+host#name/x'), 'weird-host-name-x')
    assert.equal(defaultDeviceId('...'), 'edgetoken-device')
    assert.equal(defaultDeviceId('a'.repeat(100)).length, 64)
  })
})

describe('requireIdentity', () => {
  test('returns authority, client id and scopes', async () => {
    const config = await loadConfig({
      options: {},
      env: isolatedEnv({ EDGETOKEN_AUTHORITY: 'https://idp.example.com', EDGETOKEN_CLIENT_ID: 'c' }),
    })
    assert.deepEqual(requireIdentity(config), {
      authority: 'https://idp.example.com',
      clientId: 'c',
      scopes: ['openid', 'profile', 'offline_access'],
    })
  })

  test('names the missing key', async () => {
    const none = await loadConfig({ options: {}, env: isolatedEnv() })
    assert.throws(
      () => requireIdentity(none),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.key === 'authority' &&
        /^config: authority is not set/.test(err.message),
    )
    const noClient = await loadConfig({
      options: {},
      env: isolatedEnv({ EDGETOKEN_AUTHORITY: 'https://idp.example.com' }),
    })
    assert.throws(
      () => requireIdentity(noClient),
      (err: unknown) =>
        err instanceof ConfigError && err.key === 'clientId' && /clientId is not set/.test(err.message),
    )
  })
})

describe('loadConfig: errors name the key', () => {
  test('mqtt.url must be an mqtt:// or mqtts:// URL', async () => {
    await rejects(
      { file: { mqtt: { url: 'http://broker' } } },
      'config: mqtt.url must be an mqtt:// or mqtts:// URL',
    )
    await rejects(
      { env: { EDGETOKEN_MQTT_URL: 'ws://broker' } },
      'config: EDGETOKEN_MQTT_URL must be an mqtt:// or mqtts:// URL',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://u:p@broker' } } },
      /^config: mqtt\.url must not carry credentials/,
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://broker/topic' } } },
      /^config: mqtt\.url must be .* without a path/,
    )
  })

  test('authority: http only for loopback (ERR_INSECURE_URL, exit 2 category config)', async () => {
    await rejects(
      { file: { authority: 'http://idp.example.com' } },
      'config: authority must be an https:// URL (http:// only for loopback hosts)',
      'ERR_INSECURE_URL',
    )
    await rejects(
      { env: { EDGETOKEN_AUTHORITY: 'javascript:alert(1)' } },
      /^config: EDGETOKEN_AUTHORITY must be an https:\/\/ URL/,
      'ERR_INSECURE_URL',
    )
    await rejects({ file: { authority: 'not a url' } }, 'config: authority must be an https:// URL')
    await rejects({ file: { authority: 'https://idp.example.com/?x=1' } }, /authority must not carry a query/)
    await rejects(
      { file: { telemetry: { endpoint: 'http://api.example.com/ingest' } } },
      /^config: telemetry\.endpoint must be an https:\/\/ URL \(http:\/\/ only for loopback hosts\)$/,
      'ERR_INSECURE_URL',
    )
  })

  test('unknown keys are rejected, with a suggestion for typos', async () => {
    await rejects({ file: { clientID: 'x' } }, 'config: unknown key clientID (did you mean clientId?)')
    await rejects({ file: { mqtt: { url: 'mqtt://b', urll: 'x' } } }, /^config: unknown key mqtt\.urll/)
    await rejects({ file: { completelyDifferent: 1 } }, 'config: unknown key completelyDifferent')
    await rejects({ file: { telemetry: { batchSize: 3 } } }, /^config: unknown key telemetry\.batchSize/)
  })

  test('wrong types and ranges', async () => {
    await rejects({ file: [] }, 'config: the config file must hold a JSON object')
    await rejects({ file: { clientId: 5 } }, 'config: clientId must be a non-empty string')
    await rejects(
      { file: { clientId: 'a\u001b[2Jb' } },
      'config: clientId must not contain control characters',
    )
    await rejects({ file: { scopes: 'openid' } }, 'config: scopes must be an array of scope strings')
    await rejects({ file: { scopes: ['a b'] } }, /^config: scopes must hold scope strings/)
    await rejects(
      { file: { timeoutSeconds: 0 } },
      'config: timeoutSeconds must be an integer from 1 to 86400',
    )
    await rejects({ options: { 'timeout-seconds': 'soon' } }, 'config: --timeout-seconds must be an integer')
    await rejects(
      { env: { EDGETOKEN_TIMEOUT_SECONDS: '1.5' } },
      'config: EDGETOKEN_TIMEOUT_SECONDS must be an integer',
    )
    await rejects({ file: { mqtt: 'mqtt://b' } }, 'config: mqtt must be an object')
    await rejects(
      { file: { mqtt: { url: 'mqtt://b', allowPair: 'yes' } } },
      'config: mqtt.allowPair must be true or false',
    )
    await rejects(
      { env: { EDGETOKEN_MQTT_URL: 'mqtt://b', EDGETOKEN_MQTT_ALLOW_PAIR: 'maybe' } },
      'config: EDGETOKEN_MQTT_ALLOW_PAIR must be true or false',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://b', protocolVersion: 3 } } },
      'config: mqtt.protocolVersion must be 4 (MQTT 3.1.1) or 5',
    )
    await rejects(
      { file: { telemetry: { spoolMaxBytes: 10 } } },
      /^config: telemetry\.spoolMaxBytes must be an integer from 65536/,
    )
  })

  test('display names', async () => {
    await rejects(
      { options: { display: 'console,tv' } },
      'config: --display must be a list of console, qr, mqtt (or none)',
    )
    await rejects(
      { file: { display: 'console' } },
      'config: display must be a list of console, qr, mqtt (or none)',
    )
    await rejects({ options: { display: 'mqtt' } }, 'config: --display includes mqtt but mqtt.url is not set')
    await rejects({ file: { display: ['mqtt'] } }, 'config: display includes mqtt but mqtt.url is not set')
  })

  test('deviceId and topicPrefix must be safe MQTT topic levels', async () => {
    for (const bad of ['dev+1', 'dev#', 'a/b', '$SYS', '']) {
      await rejects({ file: { deviceId: bad } }, /^config: deviceId must be/)
    }
    await rejects(
      { env: { EDGETOKEN_DEVICE_ID: 'x/y' } },
      /^config: EDGETOKEN_DEVICE_ID must be 1-64 characters/,
    )
    for (const bad of ['a/+/b', '#', '/lead', 'trail/', 'a//b', '$share/x']) {
      await rejects(
        { file: { mqtt: { url: 'mqtt://b', topicPrefix: bad } } },
        /^config: mqtt\.topicPrefix must be topic levels/,
      )
    }
  })

  test('mqtt keys that go together', async () => {
    await rejects({ file: { mqtt: { topicPrefix: 'x' } } }, 'config: mqtt.topicPrefix needs mqtt.url')
    await rejects({ file: { mqtt: {} } }, 'config: mqtt.url is required when mqtt is set')
    await rejects({ env: { EDGETOKEN_MQTT_USERNAME: 'u' } }, 'config: EDGETOKEN_MQTT_USERNAME needs mqtt.url')
    await rejects(
      { file: { mqtt: { url: 'mqtts://b', password: 'p' } } },
      'config: mqtt.password needs mqtt.username',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtts://b', certFile: 'c.pem' } } },
      'config: mqtt.certFile needs mqtt.keyFile',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://b', caFile: 'ca.pem' } } },
      'config: mqtt.caFile needs an mqtts:// URL',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://broker.lan', username: 'u', password: 'p' } } },
      'config: mqtt.password needs an mqtts:// URL (plain mqtt:// only to a loopback broker)',
    )
    // The merged result is checked too: a password from the environment over a plain remote URL.
    await rejects(
      {
        file: { mqtt: { url: 'mqtt://broker.lan', username: 'u' } },
        env: { EDGETOKEN_MQTT_PASSWORD: 'p' },
      },
      'config: EDGETOKEN_MQTT_PASSWORD needs an mqtts:// URL (plain mqtt:// only to a loopback broker)',
    )
    const ok = await loadConfig({
      options: {},
      env: isolatedEnv({
        EDGETOKEN_MQTT_URL: 'mqtt://127.0.0.1:1883',
        EDGETOKEN_MQTT_USERNAME: 'u',
        EDGETOKEN_MQTT_PASSWORD: 'p',
      }),
    })
    assert.equal(ok.mqtt?.password, 'p')
  })

  test('unreadable or broken files', async () => {
    await rejects(
      { env: { EDGETOKEN_CONFIG: join(dir, 'missing.json') } },
      /^config: cannot read the config file .*missing\.json \(not found\)$/,
    )
    await rejects({ file: '{"clientId": ' }, /^config: .*config-\d+\.json is not valid JSON$/)
    // V8's parse message quotes the file; a secret in a broken file must not reach the message.
    await rejects(
      { file: '{"mqtt": {"password": hunter2secret}}' },
      /^config: .* is not valid JSON( \(at character \d+\))?$/,
    )
    const env = isolatedEnv({ EDGETOKEN_CONFIG: await withFile('{"mqtt": {"password": hunter2secret}}') })
    const broken = await loadConfig({ options: {}, env, cwd: dir }).catch((e: Error) => e)
    assert.ok(broken instanceof ConfigError && !broken.message.includes('hunter2'), String(broken))
    await rejects({ file: ' '.repeat(1024 * 1024 + 1) }, /is larger than 1 MiB$/)
  })

  test('a ConfigError is an EdgeTokenError that never echoes a secret value', async () => {
    const secret = 'hunter2-very-secret'
    const env = isolatedEnv({
      EDGETOKEN_CONFIG: await withFile({ mqtt: { url: 'mqtts://b', password: secret } }),
    })
    const err = await loadConfig({ options: {}, env }).catch((e: unknown) => e)
    assert.ok(isEdgeTokenError(err, 'ERR_CONFIG'))
    assert.doesNotMatch(`${err.message} ${JSON.stringify(err)}`, new RegExp(secret))
  })
})

describe('issue 11: mqtt.subscriptions and the broker password outside the config', () => {
  const mqttBase = { url: 'mqtt://127.0.0.1:1883', username: 'edge' }

  test('issue 11 #2: mqtt.subscriptions from the file, or EDGETOKEN_MQTT_SUBSCRIPTIONS (spaces or commas); default none', async () => {
    const file = await withFile({
      deviceId: 'gw-1',
      mqtt: { ...mqttBase, subscriptions: ['zigbee2mqtt/+', 'tele/+/SENSOR'] },
    })
    const fromFile = await loadConfig({ options: {}, env: isolatedEnv({ EDGETOKEN_CONFIG: file }) })
    assert.deepEqual(fromFile.mqtt?.subscriptions, ['zigbee2mqtt/+', 'tele/+/SENSOR'])
    const fromEnv = await loadConfig({
      options: {},
      env: isolatedEnv({
        EDGETOKEN_CONFIG: file,
        EDGETOKEN_MQTT_SUBSCRIPTIONS: 'shellies/+/status, esphome/#  tele/+/SENSOR',
      }),
    })
    assert.deepEqual(fromEnv.mqtt?.subscriptions, ['shellies/+/status', 'esphome/#', 'tele/+/SENSOR'])
    const none = await loadConfig({
      options: {},
      env: isolatedEnv({ EDGETOKEN_MQTT_URL: 'mqtt://127.0.0.1' }),
    })
    assert.deepEqual(none.mqtt?.subscriptions, [])
    await rejects(
      { env: { EDGETOKEN_MQTT_URL: 'mqtt://b', EDGETOKEN_MQTT_SUBSCRIPTIONS: 'tele/#/SENSOR' } },
      'config: EDGETOKEN_MQTT_SUBSCRIPTIONS filter "tele/#/SENSOR" uses # other than as the whole last level',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://b', subscriptions: ['a'.repeat(65_536)] } } },
      /^config: mqtt\.subscriptions filter "a+" is longer than 65535 bytes$/,
    )
    await rejects({ file: { mqtt: { url: 'mqtt://b', subscriptions: ['x/\ud800'] } } }, /is not valid UTF-8$/)
  })

  test("issue 11 #2: a filter that matches one of this device's own topics is refused (MQTT 5 §4.7)", async () => {
    for (const filter of [
      '#',
      '+/+/+',
      'edgetoken/+/readings',
      'edgetoken/gw-1/#',
      'edgetoken/#',
      '+/gw-1/pair',
    ]) {
      await rejects(
        { file: { deviceId: 'gw-1', mqtt: { url: 'mqtt://b', subscriptions: ['tele/+/SENSOR', filter] } } },
        /^config: mqtt\.subscriptions filter ".*" matches this device's own topic edgetoken\/gw-1\/(login|status|readings|pair); subscribe to narrower filters$/,
      )
    }
    // Another device's topics, a `$` topic and a deeper level are not this device's.
    const ok = await loadConfig({
      options: {},
      env: isolatedEnv({
        EDGETOKEN_CONFIG: await withFile({
          deviceId: 'gw-1',
          mqtt: {
            url: 'mqtt://b',
            subscriptions: ['edgetoken/gw-2/readings', '$SYS/broker/load/#', 'edgetoken/gw-1/login/x'],
          },
        }),
      }),
    })
    assert.equal(ok.mqtt?.subscriptions?.length, 3)
  })

  test('issue 11 #7: mqtt.passwordFile is relative to the config file; EDGETOKEN_MQTT_PASSWORD_FILE; never together with mqtt.password', async () => {
    const file = await withFile({ mqtt: { ...mqttBase, passwordFile: 'secrets/mqtt-password' } })
    const config = await loadConfig({ options: {}, env: isolatedEnv({ EDGETOKEN_CONFIG: file }), cwd: '/' })
    assert.equal(config.mqtt?.passwordFile, join(dir, 'secrets', 'mqtt-password'))
    assert.equal(config.mqtt?.password, undefined)
    const fromEnv = await loadConfig({
      options: {},
      env: isolatedEnv({
        EDGETOKEN_MQTT_URL: 'mqtt://127.0.0.1',
        EDGETOKEN_MQTT_USERNAME: 'u',
        EDGETOKEN_MQTT_PASSWORD_FILE: 'p.txt',
      }),
      cwd: dir,
    })
    assert.equal(fromEnv.mqtt?.passwordFile, join(dir, 'p.txt'))
    await rejects(
      { file: { mqtt: { ...mqttBase, password: 'p' } }, env: { EDGETOKEN_MQTT_PASSWORD_FILE: '/run/p' } },
      'config: EDGETOKEN_MQTT_PASSWORD_FILE and mqtt.password are both set; keep one (the file)',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtts://b', passwordFile: 'p' } } },
      'config: mqtt.passwordFile needs mqtt.username',
    )
    await rejects(
      { file: { mqtt: { url: 'mqtt://broker.lan', username: 'u', passwordFile: 'p' } } },
      'config: mqtt.passwordFile needs an mqtts:// URL (plain mqtt:// only to a loopback broker)',
    )
  })

  test('issue 11 #7: the systemd credential $CREDENTIALS_DIRECTORY/mqtt-password is used when no password is configured', async () => {
    const credentials = join(dir, 'credentials')
    await rm(credentials, { recursive: true, force: true })
    const { mkdir } = await import('node:fs/promises')
    await mkdir(credentials)
    const env = { CREDENTIALS_DIRECTORY: credentials, EDGETOKEN_CONFIG: await withFile({ mqtt: mqttBase }) }
    const absent = await loadConfig({ options: {}, env: isolatedEnv(env) })
    assert.equal(absent.mqtt?.passwordFile, undefined, 'no credential file: no password')
    await writeFile(join(credentials, 'mqtt-password'), 'from-systemd\n', { mode: 0o400 })
    const present = await loadConfig({ options: {}, env: isolatedEnv(env) })
    assert.equal(present.mqtt?.passwordFile, join(credentials, 'mqtt-password'))
    // An explicit setting wins, as with the store key.
    const explicit = await loadConfig({
      options: {},
      env: isolatedEnv({ ...env, EDGETOKEN_MQTT_PASSWORD_FILE: '/run/other' }),
    })
    assert.equal(explicit.mqtt?.passwordFile, '/run/other')
    // No broker configured: the credential is not an MQTT setting on its own.
    const noMqtt = await loadConfig({ options: {}, env: isolatedEnv({ CREDENTIALS_DIRECTORY: credentials }) })
    assert.equal(noMqtt.mqtt, undefined)
    await rejects(
      { env: { CREDENTIALS_DIRECTORY: credentials, EDGETOKEN_MQTT_URL: 'mqtts://b' } },
      'config: $CREDENTIALS_DIRECTORY/mqtt-password needs mqtt.username',
    )
  })

  test('issue 11 #7: one warning line, once per file, when a config holding mqtt.password is readable by group or others; never the password', async () => {
    const { chmod } = await import('node:fs/promises')
    const secret = 'hunter2-in-the-config'
    const file = await withFile({ mqtt: { ...mqttBase, password: secret } })
    const warnings: string[] = []
    const warn = (line: string) => warnings.push(line)
    await chmod(file, 0o600)
    await loadConfig({ options: {}, env: isolatedEnv({ EDGETOKEN_CONFIG: file }), warn })
    assert.deepEqual(warnings, [], 'owner-only: no warning')
    await chmod(file, 0o640)
    await loadConfig({ options: {}, env: isolatedEnv({ EDGETOKEN_CONFIG: file }), warn })
    await loadConfig({ options: {}, env: isolatedEnv({ EDGETOKEN_CONFIG: file }), warn })
    assert.equal(warnings.length, 1, 'once')
    assert.match(warnings[0] ?? '', /holds mqtt\.password and is readable by other users \(mode 0640\)/)
    assert.match(warnings[0] ?? '', /mqtt\.passwordFile or the systemd credential mqtt-password/)
    assert.doesNotMatch(warnings[0] ?? '', /\n/)
    assert.ok(!(warnings[0] ?? '').includes(secret))
    // The password from the environment is not in the file: nothing to warn about.
    const other = await withFile({ mqtt: mqttBase })
    await chmod(other, 0o644)
    await loadConfig({
      options: {},
      env: isolatedEnv({ EDGETOKEN_CONFIG: other, EDGETOKEN_MQTT_PASSWORD: secret }),
      warn,
    })
    assert.equal(warnings.length, 1)
  })
})
