import assert from 'node:assert/strict'
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import {
  durableFileIo,
  fsyncDirectory,
  fsyncDirectorySync,
  reserveFileReplace,
  writeFileAtomic,
} from '../../../src/lib/fs/durable-file.js'
import { sweepTempFiles, tempFileName } from '../../../src/lib/fs/temp-files.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-durable-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const newDir = () => {
  const dir = join(root, `d${n++}`)
  mkdirSync(dir)
  return dir
}

describe('issue 11 #4: reserved replace (room held on disk before the content exists)', () => {
  const temporaries = (dir: string) => readdirSync(dir).filter((f) => f.includes('.tmp-'))

  test('holds the room in its temporary (0600), then replaces the file with exactly the content', async () => {
    const dir = newDir()
    const file = join(dir, 'state.json')
    writeFileSync(file, 'old')
    const room = await reserveFileReplace(file, 8192)
    const [temp] = temporaries(dir)
    assert.ok(temp, 'a temporary holds the room')
    assert.equal(statSync(join(dir, temp)).size, 8192)
    assert.equal(statSync(join(dir, temp)).mode & 0o777, 0o600)
    assert.equal(readFileSync(file, 'utf8'), 'old', 'the file is untouched until the commit')
    await room.commit('new, shorter than the room')
    await room.release()
    assert.equal(readFileSync(file, 'utf8'), 'new, shorter than the room')
    assert.deepEqual(temporaries(dir), [])
  })

  test('content longer than the room is still written whole', async () => {
    const dir = newDir()
    const file = join(dir, 'state.json')
    const room = await reserveFileReplace(file, 4)
    await room.commit('0123456789')
    assert.equal(readFileSync(file, 'utf8'), '0123456789')
  })

  test('release gives the room back; a released reservation cannot be committed', async () => {
    const dir = newDir()
    const file = join(dir, 'state.json')
    const room = await reserveFileReplace(file, 4096)
    await room.release()
    await room.release()
    assert.deepEqual(temporaries(dir), [])
    await assert.rejects(room.commit('x'), TypeError)
    assert.deepEqual(readdirSync(dir), [])
  })

  test('a temporary swept meanwhile (a long request) falls back to an ordinary replace', async () => {
    const dir = newDir()
    const file = join(dir, 'state.json')
    const room = await reserveFileReplace(file, 4096)
    assert.equal(sweepTempFiles(dir, ['state.json']), 1)
    await room.commit('saved anyway')
    assert.equal(readFileSync(file, 'utf8'), 'saved anyway')
    assert.deepEqual(temporaries(dir), [])
  })
})

describe('durable atomic replace', () => {
  test('creates and replaces a file with mode 0600, leaving no temporary file', async () => {
    const dir = newDir()
    const path = join(dir, 'state.json')
    await writeFileAtomic(path, 'one')
    assert.equal(readFileSync(path, 'utf8'), 'one')
    assert.equal(statSync(path).mode & 0o777, 0o600)
    await writeFileAtomic(path, new TextEncoder().encode('two'))
    assert.equal(readFileSync(path, 'utf8'), 'two')
    await writeFileAtomic(path, 'three', { durable: false })
    assert.equal(readFileSync(path, 'utf8'), 'three')
    assert.deepEqual(readdirSync(dir), ['state.json'])
  })

  test('concurrent replaces each land whole', async () => {
    const dir = newDir()
    const path = join(dir, 'f')
    const values = Array.from({ length: 20 }, (_, i) => `value-${i}-${'x'.repeat(i * 100)}`)
    await Promise.all(values.map((v) => writeFileAtomic(path, v)))
    assert.ok(values.includes(readFileSync(path, 'utf8')), 'the file holds one whole value')
    assert.deepEqual(readdirSync(dir), ['f'])
  })

  test('a failed replace throws the file-system error and removes its temporary file', async () => {
    const dir = newDir()
    const target = join(dir, 'target')
    mkdirSync(target)
    writeFileSync(join(target, 'inside'), '')
    await assert.rejects(
      writeFileAtomic(target, 'data'),
      (err: NodeJS.ErrnoException) => typeof err.code === 'string',
    )
    assert.deepEqual(readdirSync(dir), ['target'])
    await assert.rejects(writeFileAtomic(join(dir, 'missing', 'f'), 'data'), { code: 'ENOENT' })
  })

  test('a read-only directory fails before anything is written', async (t) => {
    if (process.getuid?.() === 0) return t.skip('root ignores directory permissions')
    const dir = newDir()
    chmodSync(dir, 0o500)
    t.after(() => chmodSync(dir, 0o700))
    await assert.rejects(writeFileAtomic(join(dir, 'f'), 'data'), { code: 'EACCES' })
  })

  test('issue 20: a temporary that cannot be created (EROFS, which root gets too) fails before anything is written', async (t) => {
    const dir = newDir()
    const path = join(dir, 'state.json')
    writeFileSync(path, 'old')
    const open = durableFileIo.open
    t.after(() => {
      durableFileIo.open = open
    })
    durableFileIo.open = async () => {
      throw Object.assign(new Error('read-only file system'), { code: 'EROFS' })
    }
    await assert.rejects(writeFileAtomic(path, 'new'), { code: 'EROFS' })
    await assert.rejects(reserveFileReplace(path, 4096), { code: 'EROFS' })
    assert.equal(readFileSync(path, 'utf8'), 'old')
    assert.deepEqual(readdirSync(dir), ['state.json'])
  })

  test('issue 20: the temporary is fsynced before the rename; a failed fsync (EIO) keeps the old file and no temporary', async (t) => {
    const dir = newDir()
    const path = join(dir, 'state.json')
    writeFileSync(path, 'old')
    const open = durableFileIo.open
    t.after(() => {
      durableFileIo.open = open
    })
    const seenAtSync: string[] = []
    let failSync = false
    durableFileIo.open = async (temp) => {
      const handle = await open(temp)
      const sync = handle.sync.bind(handle)
      handle.sync = async () => {
        // What a reader would find at the target while the new content is being made durable.
        seenAtSync.push(readFileSync(path, 'utf8'))
        if (failSync) throw Object.assign(new Error('i/o error'), { code: 'EIO' })
        await sync()
      }
      return handle
    }
    await writeFileAtomic(path, 'new')
    assert.deepEqual(seenAtSync, ['old'], 'one fsync of the temporary, before the rename')
    assert.equal(readFileSync(path, 'utf8'), 'new')
    await writeFileAtomic(path, 'newer', { durable: false })
    assert.equal(seenAtSync.length, 1, 'durable: false skips the fsync')
    failSync = true
    await assert.rejects(writeFileAtomic(path, 'lost'), { code: 'EIO' })
    assert.equal(readFileSync(path, 'utf8'), 'newer')
    assert.deepEqual(readdirSync(dir), ['state.json'])
  })

  test('fsyncs a directory, asynchronously or not', async () => {
    const dir = newDir()
    await fsyncDirectory(dir)
    fsyncDirectorySync(dir)
    await assert.rejects(fsyncDirectory(join(dir, 'missing')), { code: 'ENOENT' })
  })

  test('temporary names are unique and recognised by the sweep', () => {
    const dir = newDir()
    const a = tempFileName(join(dir, 'tokens.store'))
    const b = tempFileName(join(dir, 'tokens.store'))
    assert.notEqual(a, b)
    writeFileSync(a, '')
    writeFileSync(b, '')
    assert.equal(sweepTempFiles(dir, ['tokens.store']), 2)
  })

  test('sweeps only the temporaries of the named files', () => {
    const dir = newDir()
    for (const name of ['tokens.store.tmp-1-ab', 'tokens.lock.tmp-cd', 'other.tmp-ef', 'tokens.store']) {
      writeFileSync(join(dir, name), '')
    }
    assert.equal(sweepTempFiles(dir, ['tokens.store', 'tokens.lock']), 2)
    assert.deepEqual(readdirSync(dir).sort(), ['other.tmp-ef', 'tokens.store'])
    assert.equal(sweepTempFiles(join(dir, 'missing'), ['x']), 0)
  })

  test('without the lock, sweeps only temporaries older than the bound (a live writer keeps its own)', () => {
    const dir = newDir()
    writeFileSync(join(dir, 'metadata.json.tmp-1-old'), '')
    writeFileSync(join(dir, 'metadata.json.tmp-2-new'), '')
    const old = new Date(Date.now() - 120_000)
    utimesSync(join(dir, 'metadata.json.tmp-1-old'), old, old)
    assert.equal(sweepTempFiles(dir, ['metadata.json'], { olderThanMs: 60_000 }), 1)
    assert.deepEqual(readdirSync(dir), ['metadata.json.tmp-2-new'])
  })
})
