/**
 * `edgetoken config` (issue 15): edits the config file the other commands read, on conf with
 * config/schema.json, validated by the loader's own rules before anything is written.
 */
import assert from 'node:assert/strict'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { parseValue } from '../../src/cli/commands/config.js'
import { loadConfig } from '../../src/config/load.js'
import { collect, ROOT, runMain, spawnCli } from '../support/cli.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-config-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

/** A fresh directory and the environment of a machine whose config file is `file`. */
function machine(): { dir: string; file: string; env: NodeJS.ProcessEnv } {
  const dir = join(root, `m${n++}`)
  mkdirSync(dir)
  const file = join(dir, 'config.json')
  return {
    dir,
    file,
    env: { EDGETOKEN_CONFIG: file, HOME: join(dir, 'home'), XDG_CONFIG_HOME: join(dir, 'xdg') },
  }
}

async function config(env: NodeJS.ProcessEnv, ...args: string[]) {
  return runMain(['config', ...args], env)
}

/** VALUE text for a value: raw for strings that would not parse as JSON, else JSON. */
function valueText(value: unknown): string {
  return typeof value === 'string' && parseValue(value) === value ? value : JSON.stringify(value)
}

/** The dotted pairs of a config object, in file order. */
function pairs(data: Record<string, unknown>): [string, unknown][] {
  return Object.entries(data).flatMap(([k, v]) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.entries(v as Record<string, unknown>).map(([s, w]): [string, unknown] => [`${k}.${s}`, w])
      : [[k, v] as [string, unknown]],
  )
}

/** What the loader says about a config object, or undefined when it loads. */
async function loaderSays(data: unknown): Promise<string | undefined> {
  const file = join(root, `probe-${n++}.json`)
  writeFileSync(file, JSON.stringify(data))
  try {
    await loadConfig({ options: { config: file }, env: {} })
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

describe('edgetoken config', () => {
  const examples = readdirSync(join(ROOT, 'config', 'examples')).filter((f) => f.endsWith('.json'))

  test('issue 15: every example config is rebuilt with config set, one key per call where the rules allow', async () => {
    assert.ok(examples.length >= 3)
    for (const name of examples) {
      const example = JSON.parse(readFileSync(join(ROOT, 'config', 'examples', name), 'utf8')) as Record<
        string,
        unknown
      >
      const { file, env } = machine()
      let left = pairs(example)
      let single = 0
      while (left.length > 0) {
        const failed: [string, unknown][] = []
        for (const [key, value] of left) {
          const r = await config(env, 'set', key, valueText(value))
          if (r.code === 0) single += 1
          else {
            assert.equal(r.code, 2, r.err)
            failed.push([key, value])
          }
        }
        if (failed.length === left.length) {
          // Keys that need each other (mqtt.certFile and mqtt.keyFile): one call.
          const r = await config(env, 'set', ...failed.flatMap(([k, v]) => [k, valueText(v)]))
          assert.equal(r.code, 0, `${name}: ${r.err}`)
          break
        }
        left = failed
      }
      assert.ok(single >= pairs(example).length - 2, `${name}: most keys set one by one`)
      assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), example, name)
      const listed = await config(env, 'list', '--json')
      assert.deepEqual(JSON.parse(listed.out), example, `${name}: list --json`)
      // What the other commands read is that file.
      const loaded = await loadConfig({ options: {}, env })
      assert.equal(loaded.configFile, file)
      for (const [key, value] of pairs(example)) {
        const got = await config(env, 'get', key)
        assert.equal(
          got.out,
          `${typeof value === 'string' ? value : JSON.stringify(value)}\n`,
          `${name}: get ${key}`,
        )
      }
    }
  })

  test('issue 15: VALUE is JSON when it parses, else a string; get prints strings raw, other values as JSON', async () => {
    const { file, env } = machine()
    assert.equal(
      (await config(env, 'set', 'timeoutSeconds', '900', 'scopes', '["openid","telemetry:write"]')).code,
      0,
    )
    assert.equal(
      (await config(env, 'set', 'clientId', '"1234"', 'authority', 'https://idp.example.com/realms/x')).code,
      0,
    )
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
      timeoutSeconds: 900,
      scopes: ['openid', 'telemetry:write'],
      clientId: '1234',
      authority: 'https://idp.example.com/realms/x',
    })
    assert.equal((await config(env, 'get', 'clientId')).out, '1234\n')
    assert.equal((await config(env, 'get', 'timeoutSeconds')).out, '900\n')
    assert.equal((await config(env, 'get', 'scopes')).out, '["openid","telemetry:write"]\n')
    assert.equal((await config(env, 'get', 'deviceId')).out, '', 'an unset key prints nothing')
    assert.equal((await config(env, 'get', 'deviceId', '--json')).out, 'null\n')
    assert.equal((await config(env, 'get', 'clientId', '--json')).out, '"1234"\n')
    assert.equal((await config(env, 'path')).out, `${file}\n`)
    assert.equal(
      (await config(env, 'list')).out,
      'timeoutSeconds=900\nscopes=["openid","telemetry:write"]\nclientId=1234\nauthority=https://idp.example.com/realms/x\n',
    )
    // A number where a string is wanted: the loader's words, and how to pass the text.
    const digits = await config(env, 'set', 'deviceId', '42')
    assert.equal(digits.code, 2)
    assert.equal(
      digits.err,
      'edgetoken: config: deviceId must be a non-empty string (for the text, pass the value as a JSON string in quotes)\n',
    )
  })

  test("issue 15: a bad key or value exits 2 with one line in the loader's words, and the file stays byte-identical", async () => {
    const { file, env } = machine()
    const start = {
      authority: 'http://127.0.0.1:4000',
      clientId: 'edgetoken-device',
      mqtt: { url: 'mqtt://127.0.0.1:1883' },
    }
    writeFileSync(file, `${JSON.stringify(start, null, 4)}\n`, { mode: 0o640 })
    const before = readFileSync(file)
    const { ino, mtimeMs } = statSync(file)
    const cases: [string[], Record<string, unknown> | undefined][] = [
      [['mqtt.urll', 'mqtt://x'], { mqtt: { url: 'mqtt://127.0.0.1:1883', urll: 'mqtt://x' } }],
      [['scope', '["a"]'], { scope: ['a'] }],
      [['authority', 'http://idp.example.com'], { authority: 'http://idp.example.com' }],
      [['timeoutSeconds', '0'], { timeoutSeconds: 0 }],
      [['mqtt.url', 'http://broker'], { mqtt: { url: 'http://broker' } }],
      [['mqtt.certFile', '/etc/c.pem'], { mqtt: { url: 'mqtt://127.0.0.1:1883', certFile: '/etc/c.pem' } }],
      [['mqtt.password', 'pw'], { mqtt: { url: 'mqtt://127.0.0.1:1883', password: 'pw' } }],
      [['display', '["console","tv"]'], { display: ['console', 'tv'] }],
      [
        ['mqtt.subscriptions', '["a/#/b"]'],
        { mqtt: { url: 'mqtt://127.0.0.1:1883', subscriptions: ['a/#/b'] } },
      ],
    ]
    for (const [args, change] of cases) {
      const r = await config(env, 'set', ...args)
      assert.equal(r.code, 2, `set ${args.join(' ')}`)
      const lines = r.err.split('\n').filter((l) => l.length > 0)
      assert.equal(lines.length, 1, r.err)
      const expected = await loaderSays({ ...start, ...change })
      assert.ok(expected, `the loader rejects ${args.join(' ')} too`)
      assert.equal(lines[0], `edgetoken: ${expected}`)
      assert.ok(!r.err.includes('pw') || args[1] !== 'pw', 'the value is not echoed')
      assert.deepEqual(readFileSync(file), before, `file unchanged after set ${args.join(' ')}`)
    }
    const unknown = await config(env, 'unset', 'mqtt.topicprefix')
    assert.equal(unknown.code, 2)
    assert.equal(
      unknown.err,
      'edgetoken: config: unknown key mqtt.topicprefix (did you mean mqtt.topicPrefix?)\n',
    )
    assert.equal((await config(env, 'get', 'clientID')).code, 2)
    assert.equal((await config(env, 'set', 'clientId')).code, 2, 'a KEY without VALUE')
    assert.deepEqual(readFileSync(file), before)
    assert.equal(statSync(file).ino, ino, 'not even replaced by an identical copy')
    assert.equal(statSync(file).mtimeMs, mtimeMs)
    assert.ok(!readdirSync(join(file, '..')).some((f) => f !== 'config.json'), 'no temporary or lock left')
  })

  test('issue 15: a file the loader rejects is not edited; get names the problem too', async () => {
    const { file, env } = machine()
    writeFileSync(file, '{"clientId": "x", "colour": "red"}\n')
    const before = readFileSync(file)
    for (const args of [['set', 'deviceId', 'gw-1'], ['get', 'clientId'], ['list']]) {
      const r = await config(env, ...args)
      assert.equal(r.code, 2, args.join(' '))
      assert.equal(r.err, `edgetoken: ${await loaderSays({ clientId: 'x', colour: 'red' })}\n`)
    }
    writeFileSync(file, '{"clientId": ')
    const broken = await config(env, 'set', 'deviceId', 'gw-1')
    assert.equal(broken.code, 2)
    assert.match(broken.err, /is not valid JSON/)
    assert.deepEqual(readFileSync(file), Buffer.from('{"clientId": '))
    assert.ok(before.length > 0)
  })

  test('issue 15: unset removes a key, and a section it leaves empty', async () => {
    const { file, env } = machine()
    assert.equal(
      (
        await config(
          env,
          'set',
          'mqtt.url',
          'mqtt://127.0.0.1:1883',
          'mqtt.topicPrefix',
          'site-a',
          'deviceId',
          'gw-1',
        )
      ).code,
      0,
    )
    assert.equal((await config(env, 'unset', 'mqtt.topicPrefix')).code, 0)
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
      mqtt: { url: 'mqtt://127.0.0.1:1883' },
      deviceId: 'gw-1',
    })
    // mqtt.url alone cannot go (the loader needs it while mqtt is set); the section can.
    const url = await config(env, 'unset', 'mqtt.url')
    assert.equal(url.code, 0, url.err)
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { deviceId: 'gw-1' })
    const { ino } = statSync(file)
    assert.equal((await config(env, 'unset', 'telemetry.endpoint')).code, 0, 'unsetting an unset key is fine')
    assert.equal(statSync(file).ino, ino, 'and writes nothing')
  })

  test('issue 15: modes: a new file with a secret path is 0600, an existing one keeps its mode, mqtt.password makes it 0600', async () => {
    const secret = machine()
    assert.equal(
      (
        await config(
          secret.env,
          'set',
          'grant',
          'client_credentials',
          'clientCredential.secretFile',
          '/etc/edgetoken/secret',
        )
      ).code,
      0,
    )
    assert.equal(statSync(secret.file).mode & 0o777, 0o600)
    assert.equal((await config(secret.env, 'set', 'deviceId', 'gw-2')).code, 0)
    assert.equal(statSync(secret.file).mode & 0o777, 0o600, 'a 0600 file is never widened')

    const shared = machine()
    writeFileSync(shared.file, '{}\n')
    chmodSync(shared.file, 0o640)
    assert.equal(
      (
        await config(
          shared.env,
          'set',
          'mqtt.url',
          'mqtt://127.0.0.1:1883',
          'mqtt.username',
          'gw',
          'mqtt.passwordFile',
          '/run/pw',
        )
      ).code,
      0,
    )
    assert.equal(statSync(shared.file).mode & 0o777, 0o640, 'the service user may keep reading it')
    const password = await config(shared.env, 'unset', 'mqtt.passwordFile')
    assert.equal(password.code, 0)
    const set = await config(shared.env, 'set', 'mqtt.password', 'hunter2-secret')
    assert.equal(set.code, 0, set.err)
    assert.equal(statSync(shared.file).mode & 0o777, 0o600)
    assert.match(set.err, /mode 0600/)
    assert.ok(!set.err.includes('hunter2-secret'))
    assert.equal(
      (await config(shared.env, 'get', 'mqtt.password')).out,
      'hunter2-secret\n',
      'asked for by name',
    )
    assert.ok(!(await config(shared.env, 'list')).out.includes('hunter2-secret'), 'list hides it')
    assert.ok(!(await config(shared.env, 'list', '--json')).out.includes('hunter2-secret'))
  })

  test('issue 15: without --config, set creates $XDG_CONFIG_HOME/edgetoken/config.json, which the other commands then read', async () => {
    const { dir } = machine()
    const env = { HOME: join(dir, 'home'), XDG_CONFIG_HOME: join(dir, 'xdg') }
    const expected = join(dir, 'xdg', 'edgetoken', 'config.json')
    assert.equal((await config(env, 'path')).out, `${expected}\n`)
    assert.ok(!existsSync(join(dir, 'xdg')), 'path and get create nothing')
    assert.equal((await config(env, 'get', 'authority')).out, '')
    assert.ok(!existsSync(join(dir, 'xdg')))
    assert.equal((await config(env, 'set', 'authority', 'https://idp.example.com')).code, 0)
    const loaded = await loadConfig({ options: {}, env })
    assert.equal(loaded.configFile, expected)
    assert.equal(loaded.authority, 'https://idp.example.com')
    assert.equal(
      (await runMain(['--config', join(dir, 'other.json'), 'config', 'path'], env)).out,
      `${join(dir, 'other.json')}\n`,
    )
  })

  test('issue 15: concurrent config set processes lose no update', async () => {
    const { file, env } = machine()
    const keys: [string, string][] = [
      ['authority', 'https://idp.example.com'],
      ['clientId', 'edgetoken-device'],
      ['deviceId', 'gw-7'],
      ['timeoutSeconds', '900'],
      ['qrTheme', 'dark'],
      ['logLevel', 'debug'],
      ['telemetry.endpoint', 'https://api.example.com/ingest'],
      ['telemetry.lingerMs', '2000'],
    ]
    const results = await Promise.all(
      keys.map(([k, v]) => {
        const childEnv: Record<string, string | undefined> = {}
        for (const [name, value] of Object.entries(env)) childEnv[name] = value
        return collect(spawnCli(['config', 'set', k, v], { env: childEnv }), { timeoutMs: 60_000 })
      }),
    )
    for (const r of results) assert.equal(r.code, 0, r.stderr)
    const data = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>
    for (const [k, v] of keys) {
      assert.equal((await config(env, 'get', k)).out, `${v}\n`, `${k} kept: ${JSON.stringify(data)}`)
    }
    assert.ok(!readdirSync(join(file, '..')).some((f) => f !== 'config.json'), 'no temporary or lock left')
  })
})
