/**
 * systemd/install.sh is never run here (it installs packages and starts services as root); it must
 * parse (`bash -n`) and, when shellcheck is installed, be shellcheck-clean.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const installSh = join(root, 'systemd', 'install.sh')
const checkSh = join(root, 'systemd', 'check.sh')

test('install.sh and check.sh parse (bash -n) and are executable', () => {
  for (const file of [installSh, checkSh]) {
    const res = spawnSync('bash', ['-n', file], { encoding: 'utf8' })
    assert.equal(res.status, 0, `${file}: ${res.stderr}`)
    assert.ok((statSync(file).mode & 0o111) !== 0, `${file} is not executable`)
  }
})

test('install.sh never regenerates an existing key and encrypts it with systemd-creds', () => {
  const text = readFileSync(installSh, 'utf8')
  assert.match(text, /head -c 32 \/dev\/urandom \| systemd-creds encrypt --name=edgetoken\.key - /)
  assert.match(text, /if \[\[ -s \$encrypted_key \]\]; then\s+say "key: keeping/)
  assert.match(text, /if \[\[ -s \$plain_key \]\]; then\s+say "key: keeping/)
})

const hasShellcheck = spawnSync('shellcheck', ['--version'], { stdio: 'ignore' }).status === 0
test('shellcheck is clean', { skip: hasShellcheck ? false : 'shellcheck is not installed' }, () => {
  const res = spawnSync('shellcheck', [installSh, checkSh], { encoding: 'utf8' })
  assert.equal(res.status, 0, res.stdout + res.stderr)
})
