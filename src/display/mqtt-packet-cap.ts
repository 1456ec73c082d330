/**
 * A cap on the size of the MQTT packets a client receives, enforced on the byte stream before
 * mqtt.js's parser sees it: mqtt-packet buffers a whole packet before it parses it, so a 200 MiB
 * PUBLISH costs 200 MiB (and more) of memory, and a persistent session redelivers it after every
 * restart.
 *
 * MQTT 5 lets the client say so in CONNECT (Maximum Packet Size, §3.1.2.11.4): the broker then
 * never sends a larger packet and discards the message as if it had been delivered
 * [MQTT-3.1.2-25]. MQTT 3.1.1 has no such property, and a broker that ignores it is possible too,
 * so this stream does the same on the client: it reads the fixed header (§2.2.3), and for a
 * PUBLISH larger than the cap keeps only its topic and packet identifier, skips the rest without
 * buffering it, and hands mqtt.js a small stand-in PUBLISH (same topic, flags and packet id) whose
 * payload {@link oversizedPayloadSize} recognises. mqtt.js acknowledges the stand-in in order like
 * any other message, so the broker drops the original instead of redelivering it forever; the
 * ingest counts it as oversized. Any other packet type over the cap ends the connection.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import { Duplex } from 'node:stream'
import { EdgeTokenError } from '../errors.js'

/**
 * Largest MQTT packet the agent accepts, bytes (fixed header included, as MQTT 5's Maximum Packet
 * Size counts it). Readings are at most 16 KiB; the rest leaves room for a long topic and MQTT 5
 * properties.
 */
export const MAX_INCOMING_PACKET_BYTES = 64 * 1024

/** An oversized PUBLISH that was skipped; see {@link CapIncomingPacketsOptions.onOversized}. */
export interface OversizedPublish {
  /** Its topic. */
  readonly topic: string
  /** Its total size, bytes. */
  readonly bytes: number
  /** Its QoS. */
  readonly qos: number
}

/** Options of {@link capIncomingPackets}. */
export interface CapIncomingPacketsOptions {
  /** The cap, bytes of a whole packet. Default {@link MAX_INCOMING_PACKET_BYTES}. */
  maxBytes?: number
  /** The protocol spoken on this connection: 5 adds the (empty) properties to the stand-in. */
  protocolVersion: number
  /** Called for every PUBLISH that was skipped. */
  onOversized?: (info: OversizedPublish) => void
}

// Random per process: no message on the wire can forge the stand-in's payload.
const MARKER = randomBytes(16)
const STAND_IN_BYTES = MARKER.length + 4
const PUBLISH = 3
const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Recognises the payload of a stand-in for a PUBLISH that {@link capIncomingPackets} skipped.
 *
 * @param payload - a message payload.
 * @returns the skipped packet's size in bytes, or undefined for any other payload.
 */
export function oversizedPayloadSize(payload: Uint8Array): number | undefined {
  if (payload.byteLength !== STAND_IN_BYTES) return undefined
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  if (!view.subarray(0, MARKER.length).equals(MARKER)) return undefined
  return view.readUInt32BE(MARKER.length)
}

/** MQTT §1.5.5 / §2.2.3: the Variable Byte Integer of a remaining length. */
function encodeLength(n: number): Buffer {
  const out: number[] = []
  let x = n
  do {
    let byte = x % 128
    x = Math.floor(x / 128)
    if (x > 0) byte |= 0x80
    out.push(byte)
  } while (x > 0)
  return Buffer.from(out)
}

function standIn(first: number, head: Buffer, protocolVersion: number, bytes: number): Buffer {
  const size = Buffer.alloc(4)
  size.writeUInt32BE(Math.min(bytes, 0xffffffff))
  // Topic Name and Packet Identifier as received; MQTT 5 properties: none (length 0).
  const body = Buffer.concat([head, protocolVersion === 5 ? Buffer.of(0) : Buffer.alloc(0), MARKER, size])
  return Buffer.concat([Buffer.of(first), encodeLength(body.length), body])
}

function tooLarge(what: string, bytes: number, max: number): EdgeTokenError {
  return new EdgeTokenError(
    'ERR_INVALID_INPUT',
    `the MQTT broker sent a ${what} of ${bytes} bytes, over the ${max}-byte limit; disconnected`,
  )
}

/**
 * Wraps a connection to the broker so that no incoming packet larger than the cap is ever
 * buffered: oversized PUBLISH packets are replaced by a stand-in, any other oversized packet
 * (or a malformed length) destroys the connection with an `ERR_INVALID_INPUT` error.
 * Writes go to the connection unchanged.
 *
 * @param socket - the connection mqtt.js built (TCP or TLS).
 * @param options - the cap, the protocol version and the callbacks.
 * @returns the stream to give mqtt.js instead.
 * @see https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901050 (MQTT 5 §3.1.2.11.4)
 */
export function capIncomingPackets(socket: Duplex, options: CapIncomingPacketsOptions): Duplex {
  const max = options.maxBytes ?? MAX_INCOMING_PACKET_BYTES
  // State of the packet being read: its fixed header, then its body (passed, collected or skipped).
  let header: number[] = []
  let mode: 'header' | 'pass' | 'head' | 'skip' = 'header'
  let left = 0
  let total = 0
  let head: Buffer[] = []
  let headBytes = 0
  let headNeed = 2

  const out = new Duplex({
    read() {
      socket.resume()
    },
    writev(chunks, callback) {
      // mqtt-packet writes one packet as several corked chunks: one write keeps it contiguous.
      socket.write(Buffer.concat(chunks.map((c) => c.chunk as Buffer)), callback)
    },
    write(chunk, encoding, callback) {
      socket.write(chunk, encoding, callback)
    },
    final(callback) {
      if (socket.destroyed || socket.writableEnded) callback()
      else socket.end(() => callback())
    },
    destroy(err, callback) {
      socket.destroy()
      callback(err)
    },
  })

  const emit = (bytes: Buffer) => {
    if (!out.push(bytes)) socket.pause()
  }

  const fail = (err: Error) => {
    mode = 'skip'
    left = Number.POSITIVE_INFINITY
    out.destroy(err)
  }

  const startBody = () => {
    const first = header[0] ?? 0
    const lengthBytes = header.length - 1
    let remaining = 0
    for (let i = lengthBytes; i >= 1; i--) remaining = remaining * 128 + ((header[i] ?? 0) & 0x7f)
    total = 1 + lengthBytes + remaining
    if (total <= max) {
      emit(Buffer.from(header))
      mode = 'pass'
      left = remaining
      return
    }
    const type = first >> 4
    const qos = (first >> 1) & 3
    if (type !== PUBLISH || qos > 1) {
      fail(tooLarge(type === PUBLISH ? 'QoS 2 PUBLISH' : `packet (type ${type})`, total, max))
      return
    }
    mode = 'head'
    left = remaining
    head = []
    headBytes = 0
    headNeed = 2
  }

  const finishHead = () => {
    const first = header[0] ?? 0
    const qos = (first >> 1) & 3
    const bytes = Buffer.concat(head)
    let topic: string
    try {
      topic = utf8.decode(bytes.subarray(2, 2 + bytes.readUInt16BE(0)))
    } catch {
      fail(tooLarge('PUBLISH with a topic that is not UTF-8', total, max))
      return
    }
    const replacement = standIn(first, bytes, options.protocolVersion, total)
    options.onOversized?.({ topic, bytes: total, qos })
    emit(replacement)
    mode = 'skip'
  }

  const nextPacket = () => {
    header = []
    mode = 'header'
  }

  const feed = (chunk: Buffer) => {
    let i = 0
    while (i < chunk.length && !out.destroyed) {
      if (mode === 'header') {
        const byte = chunk[i++] ?? 0
        header.push(byte)
        // MQTT §2.2.3: at most four length bytes; a fifth continuation bit is malformed.
        if (header.length > 1 && (byte & 0x80) === 0) startBody()
        else if (header.length === 5) fail(tooLarge('packet with a malformed length', 0, max))
      } else if (mode === 'head') {
        const part = chunk.subarray(i, i + Math.min(left, headNeed - headBytes, chunk.length - i))
        head.push(Buffer.from(part))
        headBytes += part.length
        i += part.length
        left -= part.length
        if (headBytes === 2 && headNeed === 2) {
          const qos = ((header[0] ?? 0) >> 1) & 3
          headNeed = 2 + Buffer.concat(head).readUInt16BE(0) + (qos > 0 ? 2 : 0)
          if (headNeed > left + headBytes) {
            fail(tooLarge('PUBLISH with a malformed topic length', total, max))
            return
          }
        }
        if (headBytes === headNeed) finishHead()
      } else {
        const take = Math.min(left, chunk.length - i)
        // 'pass' hands the bytes on; 'skip' drops the oversized body, never keeping it.
        if (mode === 'pass') emit(chunk.subarray(i, i + take))
        i += take
        left -= take
      }
      if ((mode === 'pass' || mode === 'skip') && left === 0) nextPacket()
    }
  }

  socket.on('data', (chunk: Buffer) => {
    if (!out.destroyed) feed(chunk)
  })
  socket.on('end', () => out.push(null))
  socket.on('error', (err) => out.destroy(err))
  socket.on('close', () => {
    if (!out.destroyed) out.destroy()
  })
  return out
}
