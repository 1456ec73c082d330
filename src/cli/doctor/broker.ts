/**
 * `doctor`'s MQTT check: one connection to the configured broker with the configured TLS files
 * and credentials (where they go anyway), no reconnect, no last will, no subscription, no
 * publish; disconnected at once. A broker that refuses MQTT 5 is asked again with 3.1.1 when no
 * version is configured, as the agent does.
 *
 * @internal
 */
import type { MqttClient } from 'mqtt'
import type { MqttConfig } from '../../config/types.js'
import { type CheckResult, type DoctorInput, describe, result } from './types.js'

/** What a connection attempt ended with. */
type Outcome =
  | { kind: 'connected'; protocolVersion: number }
  | { kind: 'refused'; code: number }
  | { kind: 'error'; code: string | undefined; message: string }
  | { kind: 'closed' }
  | { kind: 'timeout' }

// CONNACK return codes: MQTT 3.1.1 §3.2.2.3 and MQTT 5 §3.2.2.2 reason codes.
const BAD_CREDENTIALS = new Set([4, 134])
const NOT_AUTHORIZED = new Set([5, 135])
const UNSUPPORTED_PROTOCOL = new Set([1, 132])

const TLS_TRUST = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
])

function attempt(
  url: string,
  options: import('mqtt').IClientOptions,
  connect: typeof import('mqtt').connect,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Outcome> {
  return new Promise((resolveOutcome) => {
    let client: MqttClient | undefined
    let settled = false
    const finish = (outcome: Outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      client?.end(true)
      resolveOutcome(outcome)
    }
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs)
    const onAbort = () => finish({ kind: 'timeout' })
    signal.addEventListener('abort', onAbort, { once: true })
    client = connect(url, { ...options, reconnectPeriod: 0, connectTimeout: timeoutMs })
    client.on('connect', () =>
      finish({ kind: 'connected', protocolVersion: client?.options.protocolVersion ?? 4 }),
    )
    client.on('error', (err: Error & { code?: unknown }) => {
      if (typeof err.code === 'number') finish({ kind: 'refused', code: err.code })
      else
        finish({
          kind: 'error',
          code: typeof err.code === 'string' ? err.code : undefined,
          message: err.message,
        })
    })
    client.on('close', () => finish({ kind: 'closed' }))
  })
}

function verdict(config: MqttConfig, outcome: Outcome, timeoutMs: number, tls: boolean): CheckResult {
  const url = new URL(config.url)
  const where = `${url.protocol}//${url.host}`
  switch (outcome.kind) {
    case 'connected': {
      const how = [
        outcome.protocolVersion === 5 ? 'MQTT 5' : 'MQTT 3.1.1',
        tls ? 'TLS verified' : 'no TLS',
        config.username !== undefined ? 'with the configured credentials' : 'anonymous',
      ]
      return result('broker', 'ok', `${where} accepted the connection (${how.join(', ')})`)
    }
    case 'refused':
      if (BAD_CREDENTIALS.has(outcome.code)) {
        return result(
          'broker',
          'fail',
          `${where} refused the user name or password (CONNACK ${outcome.code})`,
          'check mqtt.username and mqtt.passwordFile (or the systemd credential mqtt-password)',
        )
      }
      if (NOT_AUTHORIZED.has(outcome.code)) {
        return result(
          'broker',
          'fail',
          `${where} refused the connection: not authorized (CONNACK ${outcome.code})`,
          config.username === undefined
            ? 'the broker wants credentials: edgetoken config set mqtt.username NAME mqtt.passwordFile PATH'
            : "check mqtt.username and mqtt.passwordFile (or the systemd credential mqtt-password), and the broker's ACL",
        )
      }
      return result(
        'broker',
        'fail',
        `${where} refused the connection (CONNACK ${outcome.code})`,
        "check the broker's log",
      )
    case 'error': {
      const code = outcome.code
      if (code !== undefined && TLS_TRUST.has(code)) {
        return result(
          'broker',
          'fail',
          `${where}: the broker's certificate is not trusted (${code})`,
          config.caFile === undefined
            ? 'set the CA that signed it: edgetoken config set mqtt.caFile /etc/edgetoken/mqtt-ca.pem'
            : `check that mqtt.caFile ${config.caFile} is the CA that signed the broker's certificate`,
        )
      }
      if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
        return result(
          'broker',
          'fail',
          `${where}: the broker's certificate does not name ${url.hostname} (${code})`,
          'use the host name in the certificate in mqtt.url',
        )
      }
      if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
        return result(
          'broker',
          'fail',
          `${where}: the broker's certificate is outside its validity (${code})`,
          'renew the certificate, or check this clock',
        )
      }
      if (code === 'ECONNREFUSED') {
        return result(
          'broker',
          'fail',
          `nothing listens at ${where} (ECONNREFUSED)`,
          'start the broker, or fix the port: edgetoken config set mqtt.url mqtt://host:port',
        )
      }
      if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
        return result(
          'broker',
          'fail',
          `${url.hostname} does not resolve (${code})`,
          'check DNS, or fix the host: edgetoken config set mqtt.url mqtts://host:port',
        )
      }
      if (
        tls &&
        (code === 'ECONNRESET' ||
          code === 'EPROTO' ||
          /wrong version number|packet length too long/i.test(outcome.message))
      ) {
        return result(
          'broker',
          'fail',
          `${where} did not complete a TLS handshake (${code ?? 'TLS error'})`,
          'the port may speak plain MQTT: check the port, or use mqtt:// for a loopback broker',
        )
      }
      return result(
        'broker',
        'fail',
        `${where}: ${code ?? outcome.message.slice(0, 200)}`,
        'check the broker and mqtt.url',
      )
    }
    case 'closed':
      return result(
        'broker',
        'fail',
        `${where} closed the connection before accepting it`,
        tls
          ? 'check the TLS settings (mqtt.caFile, certFile, keyFile) and the broker log'
          : 'the port may expect TLS: try mqtts://, or check the broker log',
      )
    case 'timeout':
      return result(
        'broker',
        'fail',
        `${where} did not accept a connection within ${Math.round(timeoutMs / 100) / 10} s`,
        tls
          ? 'check the port, the firewall and the TLS settings'
          : 'check the port and the firewall; a TLS port needs mqtts://',
      )
  }
}

/**
 * Connects once to the configured broker and disconnects.
 *
 * @param input - config, device id, budget.
 * @returns the verdict, or undefined when no broker is configured.
 */
export async function checkBroker(input: DoctorInput): Promise<CheckResult | undefined> {
  const config = input.config.mqtt
  if (config === undefined) return undefined
  const tls = config.url.startsWith('mqtts:')
  try {
    const [{ mqttClientOptions }, { default: mqtt }] = await Promise.all([
      import('../../display/mqtt-options.js'),
      import('mqtt'),
    ])
    const options = await mqttClientOptions(config, {
      deviceId: input.config.deviceId,
      role: 'doctor',
      presence: false,
      connectTimeoutMs: input.timeoutMs,
    })
    const deadline = Date.now() + input.timeoutMs
    let outcome = await attempt(config.url, options, mqtt.connect, input.timeoutMs, input.signal)
    if (
      outcome.kind === 'refused' &&
      UNSUPPORTED_PROTOCOL.has(outcome.code) &&
      config.protocolVersion === undefined
    ) {
      const { properties: _dropped, ...older } = options
      outcome = await attempt(
        config.url,
        { ...older, protocolVersion: 4 },
        mqtt.connect,
        Math.max(1, deadline - Date.now()),
        input.signal,
      )
    }
    return verdict(config, outcome, input.timeoutMs, tls)
  } catch (err) {
    // The password file or a TLS file cannot be read: the message names the key and the file.
    return result('broker', 'fail', describe(err), 'fix the file named, or: edgetoken config set KEY PATH')
  }
}
