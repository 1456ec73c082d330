/**
 * A terminal stand-in for the companion display: subscribes to `<prefix>/<deviceId>/login` and
 * renders each screen the real 128x64 display would show as a 16x8 text frame.
 *
 * Uses only the published contract (README, schema/); never imports edgetoken's `src/`.
 *
 * @example
 * ```sh
 * MQTT_PASSWORD=... node --import tsx firmware-bridge/simulators/display.ts \
 *   --url mqtts://broker.local:8883 --device-id pi-01 --ca ca.crt --username display-pi-01
 * ```
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { createDisplayConsole } from './console.js'
import { boxed, frameRows, Screen } from './layout.js'
import { type LoginState, parseLogin } from './login.js'

/** Options of {@link startDisplaySimulator}. */
export interface DisplaySimulatorOptions {
  /** Broker URL, `mqtt://` or `mqtts://`. */
  url: string
  /** Topic prefix; default `edgetoken`. */
  topicPrefix?: string
  /** The agent's device id. */
  deviceId: string
  /** CA certificate(s) to trust for `mqtts://` (PEM). */
  ca?: Buffer | string
  /** MQTT username. */
  username?: string
  /** MQTT password (the CLI reads it from `MQTT_PASSWORD`, never from argv). */
  password?: string
  /** Called with each new frame (and the state it shows). */
  onRender?: (frame: string, state: LoginState | null) => void
  /** How long an end screen stays before the screen blanks, in ms; default 10 000 (as the firmware). */
  endHoldMs?: number
  /** How often the time left is redrawn, in ms; default 1000. */
  tickMs?: number
  /** The clock, in ms since the epoch; default `Date.now`. */
  now?: () => number
  /** MQTT protocol version; default 4 (3.1.1), what umqtt.simple speaks. */
  protocolVersion?: 4 | 5
}

/** A running display simulator. */
export interface DisplaySimulator {
  /** Every distinct frame rendered so far (boxed 16x8 text), oldest first. */
  frames: string[]
  /** The state on screen, or null when blank. */
  readonly state: LoginState | null
  /**
   * Resolves with the first frame (rendered or future) matching pred.
   *
   * @param pred - the match.
   * @param timeoutMs - default 10 000.
   */
  waitForFrame(pred: (frame: string) => boolean, timeoutMs?: number): Promise<string>
  /** Unsubscribes and disconnects. Idempotent. */
  close(): Promise<void>
}

/**
 * Connects, subscribes to the login topic (QoS 1) and renders every change.
 *
 * @param options - broker, topic and rendering options.
 * @returns the simulator, once the subscription is acknowledged (a retained pending message is
 *   then already on its way).
 * @throws when the broker refuses the connection or the subscription.
 */
export async function startDisplaySimulator(options: DisplaySimulatorOptions): Promise<DisplaySimulator> {
  const topic = `${options.topicPrefix ?? 'edgetoken'}/${options.deviceId}/login`
  const now = options.now ?? Date.now
  const seconds = () => Math.floor(now() / 1000)
  const screen = new Screen((options.endHoldMs ?? 10_000) / 1000)
  const frames: string[] = []
  const waiters = new Set<(frame: string) => void>()
  let last = boxed(frameRows([]))

  const render = () => {
    const frame = boxed(frameRows(screen.ops(seconds())))
    if (frame === last) return
    last = frame
    frames.push(frame)
    options.onRender?.(frame, screen.state)
    for (const w of waiters) w(frame)
  }

  const connectOptions: IClientOptions = {
    protocolVersion: options.protocolVersion ?? 4,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    clientId: `edgedisplay-sim-${options.deviceId}-${process.pid}`,
  }
  if (options.ca !== undefined) connectOptions.ca = options.ca
  if (options.username !== undefined) connectOptions.username = options.username
  if (options.password !== undefined) connectOptions.password = options.password
  // No retries on the first connect: a wrong URL or password should fail loudly, not loop.
  const client: MqttClient = await mqtt.connectAsync(options.url, connectOptions, false)
  client.on('message', (_topic, payload) => {
    if (screen.apply(parseLogin(payload), seconds())) render()
  })
  try {
    const granted = await client.subscribeAsync(topic, { qos: 1 })
    if (granted.some((g) => g.qos > 2)) throw new Error(`subscription to ${topic} refused`)
  } catch (err) {
    await client.endAsync(true)
    throw err
  }
  const timer = setInterval(() => {
    screen.tick(seconds())
    render()
  }, options.tickMs ?? 1000)

  let closed = false
  return {
    frames,
    get state() {
      return screen.state
    },
    waitForFrame(pred, timeoutMs = 10_000) {
      const found = frames.find(pred)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const waiter = (frame: string) => {
          if (!pred(frame)) return
          clearTimeout(t)
          waiters.delete(waiter)
          resolve(frame)
        }
        const t = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`no matching frame within ${timeoutMs} ms; last:\n${last}`))
        }, timeoutMs)
        waiters.add(waiter)
      })
    },
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      waiters.clear()
      await client.endAsync(true)
    },
  }
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
      prefix: { type: 'string', default: 'edgetoken' },
      'device-id': { type: 'string' },
      ca: { type: 'string' },
      username: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help || !values['device-id']) {
    process.stderr.write(
      'usage: display.ts --device-id ID [--url mqtt://127.0.0.1:1883] [--prefix edgetoken] [--ca FILE] [--username U]\n' +
        '       the password comes from the MQTT_PASSWORD environment variable\n',
    )
    process.exitCode = values.help ? 0 : 2
    return
  }
  const out = createDisplayConsole({
    write: (text) => process.stdout.write(text),
    tty: process.stdout.isTTY === true,
  })
  const options: DisplaySimulatorOptions = {
    url: values.url,
    topicPrefix: values.prefix,
    deviceId: values['device-id'],
    // Each screen once; the countdown redrawn in place on a terminal, every 30 s on a pipe or log.
    onRender: out.render,
  }
  if (values.ca) options.ca = readFileSync(values.ca)
  if (values.username) options.username = values.username
  if (process.env.MQTT_PASSWORD) options.password = process.env.MQTT_PASSWORD
  const sim = await startDisplaySimulator(options)
  process.stderr.write(`display simulator: ${options.topicPrefix}/${options.deviceId}/login\n`)
  const stop = () => {
    out.close()
    void sim.close()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli().catch((err: unknown) => {
    process.stderr.write(`display simulator: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
