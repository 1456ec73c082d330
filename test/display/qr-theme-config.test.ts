/**
 * Issue 11 #1: the `qrTheme` option (config key, `EDGETOKEN_QR_THEME`, `--qr-theme`), for terminals
 * without colour whose background is light.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import Ajv2020Module from 'ajv/dist/2020.js'
import { loadConfig } from '../../src/config/load.js'
import { ConfigError } from '../../src/errors.js'

const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgetoken-qr-theme-'))
})
after(() => rm(dir, { recursive: true, force: true }))

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { HOME: join(dir, 'home'), XDG_CONFIG_HOME: join(dir, 'xdg'), ...extra }
}

describe('issue 11 #1: qrTheme option', () => {
  test('default undefined (auto); file < env < flag', async () => {
    assert.equal((await loadConfig({ options: {}, env: env(), cwd: dir })).qrTheme, undefined)
    const file = join(dir, 'config.json')
    await writeFile(file, JSON.stringify({ qrTheme: 'light' }))
    const fromFile = await loadConfig({ options: { config: file }, env: env(), cwd: dir })
    assert.equal(fromFile.qrTheme, 'light')
    const fromEnv = await loadConfig({
      options: { config: file },
      env: env({ EDGETOKEN_QR_THEME: 'dark' }),
      cwd: dir,
    })
    assert.equal(fromEnv.qrTheme, 'dark')
    const fromFlag = await loadConfig({
      options: { config: file, 'qr-theme': 'auto' },
      env: env({ EDGETOKEN_QR_THEME: 'dark' }),
      cwd: dir,
    })
    assert.equal(fromFlag.qrTheme, 'auto')
  })

  test('an unknown theme is a config error naming where it came from', async () => {
    for (const [source, label] of [
      [{ options: { 'qr-theme': 'blue' }, env: env() }, '--qr-theme'],
      [{ options: {}, env: env({ EDGETOKEN_QR_THEME: 'Light' }) }, 'EDGETOKEN_QR_THEME'],
    ] as const) {
      await assert.rejects(loadConfig({ ...source, cwd: dir }), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.message, `config: ${label} must be one of auto, dark, light`)
        return true
      })
    }
  })

  test('config/schema.json accepts the same values', async () => {
    const schemaFile = fileURLToPath(new URL('../../config/schema.json', import.meta.url))
    const schema = JSON.parse(await readFile(schemaFile, 'utf8')) as Record<string, unknown>
    const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema)
    for (const theme of ['auto', 'dark', 'light']) assert.equal(validate({ qrTheme: theme }), true, theme)
    assert.equal(validate({ qrTheme: 'blue' }), false)
  })
})
