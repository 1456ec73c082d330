/**
 * The agent daemon behind `edgetoken run`: keeps the access token fresh, ingests MQTT readings
 * into the durable spool, and uploads the spool to the protected API, until stopped.
 *
 * ```
 *   renewer ──(acquireTokenSilent, forced, ahead of expiry)──> token store
 *   MQTT readings ──> ingest (validate) ──> spool (fsync) ──> uploader ──> API
 *   MQTT pair ──> gate (allowPair, nonce, rate) ──> signIn() (the `login` code path)
 * ```
 *
 * A dead refresh token does not stop anything but renewal and upload: the daemon says so (a
 * warning line, the systemd status, and with MQTT a retained `signin_required` notice on the
 * login topic for the companion display), keeps spooling, and resumes once someone signs in
 * again: through a pair request, or `edgetoken login` run next to it (the daemon notices the new
 * tokens in the store). The notice is cleared then, and when the daemon stops.
 *
 * On stop (SIGTERM): readings in flight reach the disk, the batch in flight gets a short grace,
 * the MQTT status goes `offline`, all within `shutdownTimeoutMs`. Nothing acknowledged (to a
 * sensor's broker or by the API) is lost: the spool keeps every record until the API took it.
 *
 * @packageDocumentation
 */
import type { MqttClient } from 'mqtt'
import { requireIdentity } from '../config/load.js'
import type { EdgeTokenConfig } from '../config/types.js'
import type { MqttRelay } from '../display/mqtt-relay.js'
import { isEdgeTokenError } from '../errors.js'
import { backoffDelayMs } from '../lib/backoff.js'
import { isoSeconds } from '../lib/time.js'
import type { RefreshFunction, SilentTokenResult } from '../store/cache.js'
import type { TokenStore } from '../store/token-store.js'
import type { Spool } from '../telemetry/spool.js'
import type { UploadEvent, Uploader } from '../telemetry/uploader.js'
import { waitForSaneClock } from './clock.js'
import type { IngestCounters, ReadingIngest } from './ingest.js'
import type { Notifier } from './notify.js'
import type { PairCounters, PairListener } from './pair.js'
import { createRenewer, type Renewer } from './renewer.js'

/** Options of {@link runDaemon}. */
export interface DaemonOptions {
  /** The loaded configuration (authority and clientId are required). */
  config: EdgeTokenConfig
  /** The environment (key file, systemd credentials). */
  env: NodeJS.ProcessEnv
  /** Stops the daemon (SIGTERM/SIGINT). */
  signal: AbortSignal
  /** Informational lines (one event each; never a secret). */
  log: (line: string) => void
  /** Warnings (sign-in required, broker trouble, dropped readings). */
  warn: (line: string) => void
  /** Structured events for `--json` (`ready`, `renewed`, `uploaded`, `signin_required`, `signed_in`, `stopped`). */
  emit?: (event: Readonly<Record<string, unknown>>) => void
  /**
   * The refresh callback of silent acquisition for an authority and client (discovery cached in
   * the state directory, then the refresh grant): the CLI passes its `refreshFor`, so the daemon
   * and `edgetoken token` refresh the same way.
   */
  refreshFor: (
    authority: string,
    clientId: string,
    store: TokenStore,
    signal: AbortSignal | undefined,
  ) => RefreshFunction
  /**
   * Runs a device flow to the end (the `login` command's code path, with its displays and the
   * MQTT relay); called for an accepted pair request. Without it, pair requests are refused.
   */
  signIn?: (signal: AbortSignal) => Promise<void>
  /** systemd notifications, when started by systemd with `Type=notify`. */
  notifier?: Notifier | undefined
  /** Upper bound of the shutdown, ms. Default 10000. */
  shutdownTimeoutMs?: number
  /** How often an idle spool is checked for new records, ms. Default 2000. */
  idlePollMs?: number
  /** While sign-in is required, how often the store is checked for a new sign-in, ms. Default 10000. */
  signinWatchMs?: number
  /** Renewal timing (tests, and fleets that want a wider window). */
  renewal?: { marginMs?: number; jitterMs?: number }
}

/** What {@link runDaemon} reports when it has stopped. */
export interface DaemonSummary {
  /** Token requests made by the renewer. */
  renewals: number
  /** Records the API acknowledged. */
  uploadedRecords: number
  /** MQTT reading counters, when MQTT was configured. */
  ingest?: IngestCounters
  /** Pair request counters, when pairing was enabled. */
  pair?: PairCounters
  /** Whether sign-in was required at the end. */
  signinRequired: boolean
}

const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000
const LOG_INTERVAL_MS = 60_000
const FINAL_FLUSH_MS = 2000
/** How long the broker keeps the agent's session (and queues readings) while it is not running, s. */
const MQTT_SESSION_EXPIRY_SECONDS = 86_400

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve()
      return
    }
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), Math.max(0, ms))
    }),
  ]).finally(() => clearTimeout(timer))
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * Runs the daemon until `options.signal` fires, then shuts down within `shutdownTimeoutMs`.
 *
 * @param options - configuration, stop signal, output and the sign-in hook.
 * @returns a summary once stopped.
 * @throws ConfigError when authority or clientId is missing; StoreError when the token store
 *   cannot be opened; EdgeTokenError `ERR_IO` when the spool cannot be opened. Nothing is thrown
 *   once the daemon is running: failures are logged and retried.
 */
export async function runDaemon(options: DaemonOptions): Promise<DaemonSummary> {
  const { config, signal, log, warn } = options
  const emit = options.emit ?? (() => {})
  const identity = requireIdentity(config)
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS
  const summary: DaemonSummary = { renewals: 0, uploadedRecords: 0, signinRequired: false }

  // A Pi without a real-time clock boots in 1970: every token would look expired (or valid).
  try {
    await waitForSaneClock({ signal, onWarning: warn })
  } catch (err) {
    if (isEdgeTokenError(err, 'ERR_CANCELLED')) return summary
    throw err
  }

  const [{ openTokenStore }, cache, { openSpool }] = await Promise.all([
    import('../store/token-store.js'),
    import('../store/cache.js'),
    import('../telemetry/spool.js'),
  ])
  const store: TokenStore = await openTokenStore({
    stateDir: config.stateDir,
    env: options.env,
    keyFile: config.keyFile,
    onWarning: warn,
  })
  const telemetry = config.telemetry
  const spool: Spool = await openSpool(
    config.stateDir,
    telemetry?.spoolMaxBytes === undefined ? {} : { maxBytes: telemetry.spoolMaxBytes },
  )

  // --- tokens -------------------------------------------------------------------------------
  const getToken = (forceRefresh: boolean, tokenSignal: AbortSignal = signal): Promise<SilentTokenResult> =>
    cache.acquireTokenSilent(store, {
      authority: identity.authority,
      clientId: identity.clientId,
      scopes: identity.scopes,
      forceRefresh,
      signal: tokenSignal,
      refresh: options.refreshFor(identity.authority, identity.clientId, store, tokenSignal),
    })

  // --- sign-in state ------------------------------------------------------------------------
  let signinRequired = false
  let signinMarker: number | null = null
  let wakeUploads: (() => void) | undefined
  let signingIn: Promise<void> | undefined
  let signinWatch: NodeJS.Timeout | undefined
  let signinSince = 0
  const pairEnabled = Boolean(config.mqtt?.allowPair && options.signIn)
  // The companion display's view of the sign-in state (on the daemon's own MQTT client).
  let relay: MqttRelay | undefined
  const announceSignin = () => {
    if (signinRequired && !signal.aborted)
      void relay?.announceSigninRequired({ since: signinSince, pair: pairEnabled })
  }

  const setStatus = (text: string) => {
    void options.notifier?.status(text)
  }

  const leaveSigninRequired = (how: string) => {
    if (!signinRequired) return
    signinRequired = false
    summary.signinRequired = false
    if (signinWatch) clearInterval(signinWatch)
    signinWatch = undefined
    void relay?.clearSigninRequired()
    log(`edgetoken: signed in again (${how}); renewal and upload resume`)
    emit({ event: 'signed_in' })
    setStatus('running')
    renewer.start()
    wakeUploads?.()
  }

  const enterSigninRequired = (reason: string) => {
    if (signinRequired || signal.aborted) return
    signinRequired = true
    summary.signinRequired = true
    signinSince = Date.now()
    renewer.stop()
    const how = pairEnabled
      ? "run 'edgetoken login' or send a pair request from the companion display"
      : "run 'edgetoken login'"
    warn(`sign-in required (${reason}): ${how}; readings are still spooled`)
    emit({ event: 'signin_required', message: reason })
    setStatus('sign-in required; spooling readings')
    announceSignin()
    // Notice a sign-in made by another process (`edgetoken login`): new tokens in the store.
    void cache
      .readAccountStatus(store, identity)
      .then((s) => {
        signinMarker = s.signedIn ? s.accessTokenExpiresAt : null
      })
      .catch(() => {})
    signinWatch = setInterval(() => {
      void cache
        .readAccountStatus(store, identity)
        .then((s) => {
          if (s.signedIn && s.accessTokenExpiresAt !== signinMarker)
            leaveSigninRequired('new tokens in the store')
        })
        .catch((err: unknown) => warn(`cannot read the token store: ${message(err)}`))
    }, options.signinWatchMs ?? 10_000)
    signinWatch.unref()
  }

  const renewer: Renewer = createRenewer({
    renew: async (force, renewSignal) => {
      const result = await getToken(force, AbortSignal.any([signal, renewSignal]))
      return { expiresAt: result.expiresAt, fromCache: result.fromCache }
    },
    ...(options.renewal?.marginMs === undefined ? {} : { marginMs: options.renewal.marginMs }),
    ...(options.renewal?.jitterMs === undefined ? {} : { jitterMs: options.renewal.jitterMs }),
    onRenewed: (result, nextAt) => {
      if (!result.fromCache) {
        summary.renewals += 1
        log(
          `edgetoken: renewed the access token; expires ${isoSeconds(result.expiresAt)}, next renewal ${isoSeconds(nextAt)}`,
        )
        emit({
          event: 'renewed',
          expires_at: isoSeconds(result.expiresAt),
          next_renewal_at: isoSeconds(nextAt),
        })
      } else {
        log(
          `edgetoken: access token valid until ${isoSeconds(result.expiresAt)}; next renewal ${isoSeconds(nextAt)}`,
        )
      }
    },
    onRetry: (err, ms) => {
      if (!signal.aborted)
        warn(`token renewal failed (${message(err)}); retrying in ${Math.ceil(ms / 1000)} s`)
    },
    onSigninRequired: (err) => enterSigninRequired(message(err)),
  })

  const startSignIn = (why: string) => {
    if (!options.signIn || signingIn || signal.aborted) return
    log(`edgetoken: starting a device sign-in (${why})`)
    setStatus('waiting for sign-in approval')
    // The flow's own relay replaces the notice with its pending code; ours must not put it back
    // on a reconnect meanwhile.
    relay?.suspendSigninRequired()
    signingIn = options
      .signIn(signal)
      .then(
        () => {
          if (signinRequired) leaveSigninRequired(why)
          else {
            log('edgetoken: signed in')
            emit({ event: 'signed_in' })
            setStatus('running')
            renewer.start()
            wakeUploads?.()
          }
        },
        (err: unknown) => {
          if (!signal.aborted) warn(`sign-in did not complete: ${message(err)}`)
          setStatus(signinRequired ? 'sign-in required; spooling readings' : 'running')
          // The flow's relay has published its end state and cleared the topic: still signed out.
          announceSignin()
        },
      )
      .finally(() => {
        signingIn = undefined
      })
  }

  // --- MQTT: presence, ingest, pair ---------------------------------------------------------
  let mqttClient: MqttClient | undefined
  let ingest: ReadingIngest | undefined
  let pairListener: PairListener | undefined
  let pairCounters: PairCounters | undefined
  if (config.mqtt) {
    const mqttConfig = config.mqtt
    const [{ connectMqtt, mqttTopics }, { createMqttRelay }, { startReadingIngest }, pair] =
      await Promise.all([
        import('../display/mqtt-options.js'),
        import('../display/mqtt-relay.js'),
        import('./ingest.js'),
        import('./pair.js'),
      ])
    const topics = mqttTopics(mqttConfig.topicPrefix, config.deviceId)
    // A persistent session under a stable client id: QoS 1 readings published while the agent
    // restarts (or stops for less than a day) are queued by the broker and delivered on connect,
    // and readings the spool refused are redelivered (see ingest.ts). The login relay keeps its
    // own clean session and client id.
    const client = await connectMqtt(mqttConfig, {
      deviceId: config.deviceId,
      role: 'agent',
      presence: true,
      sessionExpirySeconds: MQTT_SESSION_EXPIRY_SECONDS,
    })
    mqttClient = client
    let connectedOnce = false
    let brokerWarned = false
    client.on('connect', () => {
      if (!connectedOnce) log(`edgetoken: connected to the MQTT broker; listening on ${topics.readings}`)
      connectedOnce = true
      brokerWarned = false
      client.publish(topics.status, 'online', { qos: 1, retain: true })
    })
    relay = createMqttRelay({ config: mqttConfig, deviceId: config.deviceId, client, onWarning: warn })
    announceSignin()
    client.on('error', (err) => {
      if (!brokerWarned) warn(`MQTT broker: ${message(err)} (retrying in the background)`)
      brokerWarned = true
    })
    client.on('offline', () => {
      if (connectedOnce && !brokerWarned && !signal.aborted) warn('MQTT broker connection lost; reconnecting')
      brokerWarned = true
    })
    // A sensor gone haywire (or a flood) must not flood the journal: one line per kind a minute.
    const lastLogged = new Map<string, number>()
    const limited = (kind: string, line: () => string, sink: (line: string) => void = warn) => {
      const now = Date.now()
      if (now - (lastLogged.get(kind) ?? Number.NEGATIVE_INFINITY) < LOG_INTERVAL_MS) return
      lastLogged.set(kind, now)
      sink(line())
    }
    ingest = startReadingIngest({
      client,
      topic: topics.readings,
      append: (records) => spool.append(records),
      onDrop: (reason, detail) =>
        limited('drop', () => {
          const c = ingest?.counters
          return `dropped an MQTT reading (${reason}: ${detail}); so far oversized ${c?.oversized ?? 0}, malformed ${c?.malformed ?? 0}, invalid ${c?.invalid ?? 0}, retained ${c?.retained ?? 0}`
        }),
      onError: (err) =>
        limited(
          'spool',
          () => `a reading could not be spooled (${ingest?.counters.failed ?? 0} so far): ${message(err)}`,
        ),
    })
    if (pairEnabled) {
      const gate = pair.createPairGate({ allow: true })
      pairCounters = gate.counters as PairCounters
      pairListener = pair.startPairListener({
        client,
        topic: topics.pair,
        gate,
        busy: () => signingIn !== undefined,
        onPair: () => startSignIn('pair request from the companion display'),
        onRefused: (reason) =>
          limited(`pair-${reason}`, () => `edgetoken: ignored a pair request (${reason})`, log),
        onError: (err) => warn(`pair requests: ${message(err)}`),
      })
    }
  }

  // --- upload loop --------------------------------------------------------------------------
  let uploader: Uploader | undefined
  let uploadLoop: Promise<void> = Promise.resolve()
  if (telemetry?.endpoint) {
    const { Uploader } = await import('../telemetry/uploader.js')
    uploader = new Uploader({
      spool,
      endpoint: telemetry.endpoint,
      deviceId: config.deviceId,
      batchMaxRecords: telemetry.batchMaxRecords,
      lingerMs: telemetry.lingerMs,
      shutdownGraceMs: Math.min(5000, Math.floor(shutdownTimeoutMs / 2)),
      getAccessToken: async ({ forceRefresh }) => (await getToken(forceRefresh)).accessToken,
      onEvent: (event: UploadEvent) => {
        if (event.type === 'delivered') {
          summary.uploadedRecords += event.records
          log(`edgetoken: uploaded batch ${event.batchId} seq ${event.seq} (${event.records} records)`)
          emit({ event: 'uploaded', batch_id: event.batchId, seq: event.seq, records: event.records })
        } else if (event.type === 'retry') {
          if (event.attempt === 1 || event.attempt % 10 === 0) {
            warn(
              `upload of ${event.batchId} failed (${event.reason}); retry ${event.attempt} in ${Math.ceil(event.delayMs / 1000)} s`,
            )
          }
        } else {
          warn(
            `the API rejected batch ${event.batchId} for good (${event.reason}); ${event.records} records moved to the dead-letter file`,
          )
        }
      },
    })
    const up = uploader
    uploadLoop = (async () => {
      let failures = 0
      while (!signal.aborted) {
        if (signinRequired) {
          await new Promise<void>((resolve) => {
            wakeUploads = resolve
            signal.addEventListener('abort', () => resolve(), { once: true })
          })
          wakeUploads = undefined
          continue
        }
        try {
          await up.run({
            signal,
            ...(options.idlePollMs === undefined ? {} : { idlePollMs: options.idlePollMs }),
          })
          failures = 0
        } catch (err) {
          if (signal.aborted) break
          if (isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED')) {
            enterSigninRequired(message(err))
            continue
          }
          // Anything else (the store, the disk): log, back off, go on; the spool keeps the data.
          const delay = backoffDelayMs(failures++, { baseMs: 2000, capMs: 300_000 })
          warn(`upload loop: ${message(err)}; retrying in ${Math.ceil(delay / 1000)} s`)
          await sleep(delay, signal)
        }
      }
    })()
  } else {
    log('edgetoken: no telemetry.endpoint configured: readings are spooled, not uploaded')
  }

  // --- start --------------------------------------------------------------------------------
  try {
    const status = await cache.readAccountStatus(store, identity)
    if (status.signedIn) renewer.start()
    else enterSigninRequired(status.needsSignIn ? 'the refresh token was rejected' : 'not signed in')
  } catch (err) {
    warn(`cannot read the token store: ${message(err)}`)
    renewer.start()
  }
  const stopWatchdog = options.notifier?.startWatchdog()
  void options.notifier?.ready(signinRequired ? 'sign-in required; spooling readings' : 'running')
  log(`edgetoken: agent running for device ${config.deviceId} (pid ${process.pid})`)
  emit({ event: 'ready', device_id: config.deviceId })

  // Every other timer is unref'd (so a stopped daemon exits at once); this one keeps the process
  // alive while running, and never fires in practice (about 24.8 days).
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', () => resolve(), { once: true })
  })
  clearInterval(keepAlive)

  // --- stop ---------------------------------------------------------------------------------
  const stopStarted = Date.now()
  const left = () => shutdownTimeoutMs - (Date.now() - stopStarted)
  log('edgetoken: stopping')
  void options.notifier?.stopping('stopping')
  renewer.stop()
  if (signinWatch) clearInterval(signinWatch)
  const finished = await withDeadline(
    (async () => {
      await pairListener?.close()
      // Readings already received reach the disk before anything else closes. The subscription
      // stays in the broker's session: readings published until the next start are queued.
      await ingest?.close({ unsubscribe: false })
      await uploadLoop
      await signingIn
      // Nobody acts on a pair request once we are gone: the notice goes with us.
      await relay?.close()
      if (uploader && !signinRequired && left() > FINAL_FLUSH_MS) {
        // One quick, bounded attempt to send what is left; the spool keeps it otherwise.
        await uploader
          .drain({ signal: AbortSignal.timeout(FINAL_FLUSH_MS), maxRetries: 0, maxWaitMs: 0 })
          .catch(() => undefined)
      }
      if (mqttClient?.connected && config.mqtt) {
        const { mqttTopics } = await import('../display/mqtt-options.js')
        const topics = mqttTopics(config.mqtt.topicPrefix, config.deviceId)
        await withDeadline(
          mqttClient.publishAsync(topics.status, 'offline', { qos: 1, retain: true }),
          1000,
        ).catch(() => undefined)
      }
      return true
    })(),
    Math.max(0, left() - 1000),
  )
  if (!finished) warn(`shutdown took longer than ${shutdownTimeoutMs} ms; the spool keeps what was not sent`)
  await withDeadline(mqttClient?.endAsync().catch(() => undefined) ?? Promise.resolve(), 500)
  mqttClient?.end(true)
  await uploader?.close().catch(() => undefined)
  await spool.close().catch(() => undefined)
  stopWatchdog?.()
  options.notifier?.close()
  if (ingest) summary.ingest = { ...ingest.counters }
  if (pairCounters) summary.pair = { ...pairCounters }
  emit({ event: 'stopped', uploaded_records: summary.uploadedRecords, renewals: summary.renewals })
  log(`edgetoken: stopped (${summary.renewals} renewals, ${summary.uploadedRecords} records uploaded)`)
  return summary
}
