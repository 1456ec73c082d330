import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-lock-stress-'))
after(() => rmSync(root, { recursive: true, force: true }))

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/**
 * Each contender takes the lock, records entering and leaving, then "dies" holding it: it rewrites
 * the lock's owner to a dead pid and never releases. So every round starts with all contenders
 * finding a stale lock and breaking it at once, the race the former rename-aside scheme lost.
 */
function contender(path: string, record: string, rounds: number, dead: number): ChildProcess {
  const moduleUrl = new URL('../../../src/lib/fs/file-lock.ts', import.meta.url).href
  const script = `
import { appendFileSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
const { acquireFileLock } = await import(${JSON.stringify(moduleUrl)})
const path = ${JSON.stringify(path)}
const record = ${JSON.stringify(record)}
function abandon() {
  try { rewrite() } catch { appendFileSync(record, 'lost ' + process.pid + '\\n') }
}
function rewrite() {
  let file = path
  if (lstatSync(path).isDirectory()) {
    const owner = readdirSync(path).find((e) => e.startsWith('owner-'))
    file = join(path, owner)
  }
  const content = JSON.parse(readFileSync(file, 'utf8'))
  writeFileSync(file, JSON.stringify({ ...content, pid: ${dead} }))
}
process.stdout.write('ready\\n')
await new Promise((resolve) => process.stdin.once('data', resolve))
for (let i = 0; i < ${rounds}; i++) {
  await acquireFileLock(path, { what: 'spool', timeoutMs: 60000 })
  appendFileSync(record, 'enter ' + process.pid + '\\n')
  await new Promise((r) => setImmediate(r))
  appendFileSync(record, 'exit ' + process.pid + '\\n')
  abandon()
}
process.exit(0)
`
  return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
}

test('contenders breaking one stale lock at once never hold it together (4 processes)', async () => {
  const path = join(root, 'stress.lock')
  const record = join(root, 'record.log')
  const dead = deadPid()
  writeFileSync(record, '')
  writeFileSync(path, JSON.stringify({ pid: dead, at: 0, nonce: 'dead' }))
  const rounds = 40
  const children = Array.from({ length: 4 }, () => contender(path, record, rounds, dead))
  const exits = children.map(
    (child) => new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))),
  )
  // All start together, once each has loaded the module.
  await Promise.all(
    children.map((child) => new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()))),
  )
  for (const child of children) child.stdin?.end('go\n')
  assert.deepEqual(await Promise.all(exits), [0, 0, 0, 0])
  const lines = readFileSync(record, 'utf8').trim().split('\n')
  let inside: string | undefined
  assert.equal(lines.filter((l) => l.startsWith('enter')).length, 4 * rounds)
  for (const [i, line] of lines.entries()) {
    const [what, pid] = line.split(' ')
    assert.notEqual(what, 'lost', `line ${i}: the lock ${pid} held was removed under it`)
    if (what === 'enter') {
      assert.equal(inside, undefined, `line ${i}: ${pid} entered while ${inside} was inside`)
      inside = pid
    } else {
      assert.equal(inside, pid, `line ${i}: ${pid} left but ${inside} was inside`)
      inside = undefined
    }
  }
})
