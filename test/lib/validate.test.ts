/**
 * `isPrintable`: what a server may put in a string that is shown on a terminal or a small display.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { isPrintable } from '../../src/lib/validate.js'

describe('isPrintable', () => {
  test('ordinary text, accents, CJK and emoji are printable', () => {
    for (const s of [
      'WDJB-MJHT',
      'Connectez-vous à la page',
      '請登入',
      'ok 👍',
      'https://idp.example/device',
    ]) {
      assert.equal(isPrintable(s), true, s)
    }
  })

  test('C0, DEL and C1 control characters (ANSI escapes) are not', () => {
    for (const s of ['a\u0000b', 'a\u001b[2Jb', 'a\nb', 'a\u007fb', 'a\u0085b', 'a\u009bb']) {
      assert.equal(isPrintable(s), false, JSON.stringify(s))
    }
  })

  test('Unicode format and bidi characters that reorder or hide text are not', () => {
    const rejected = [
      0x061c, // Arabic letter mark
      0x200b,
      0x200c,
      0x200d,
      0x200e,
      0x200f, // zero-width, LRM, RLM
      0x2028,
      0x2029, // line / paragraph separator
      0x202a,
      0x202b,
      0x202c,
      0x202d,
      0x202e, // embeddings and overrides
      0x2060,
      0x2061,
      0x2064,
      0x2066,
      0x2067,
      0x2068,
      0x2069, // word joiner, invisible operators, isolates
      0xfeff, // byte-order mark / zero-width no-break space
    ]
    for (const cp of rejected) {
      const s = `ABCD${String.fromCodePoint(cp)}EFGH`
      assert.equal(isPrintable(s), false, `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`)
    }
  })

  test('neighbours of the rejected ranges stay printable', () => {
    for (const cp of [0x061b, 0x200a, 0x2010, 0x2027, 0x202f, 0x205f, 0x2070, 0xfefe]) {
      assert.equal(isPrintable(`a${String.fromCodePoint(cp)}b`), true, cp.toString(16))
    }
  })
})
