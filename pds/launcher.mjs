// Starts the local PLC directory or the reference PDS for tests and `moods-pipeline stack up`.
//
//   node launcher.mjs plc --ready-file F [--port P] [--state-file S]
//   node launcher.mjs pds --ready-file F --data-dir D --plc-url http://localhost:PORT
//                         [--port P] [--invite-required] [--rate-limits] [--secrets-file S]
//
// Both bind 127.0.0.1 only. Port 0 (the default) picks a free port. When the server listens,
// the ready file (mode 0600, written atomically) receives JSON:
//   plc: {"plc_url"}
//   pds: {"pds_url", "plc_url", "admin_password"}
// The admin password goes only into the ready file and the secrets file, never to stdout.
// SIGTERM / SIGINT stop the server cleanly (exit code 0).
//
// PLC persistence: @did-plc/server's in-memory MockDatabase keeps every DID's operations in
// `db.contents`. With --state-file, each accepted operation is written to that JSON file
// (atomically, before the PLC answers) and replayed through `validateAndAddOp` on the next
// start, so DIDs created before a `stack down` still resolve after `stack up`.
//
// PDS secrets: the K256 PLC rotation key, a recovery key (its did:key goes into new DIDs), the
// JWT secret and the admin password are generated on first start and kept in the secrets file
// (mode 0600; default <data-dir>/secrets.json). Restarting on the same data dir and secrets
// file keeps every account usable.

import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import crypto from 'node:crypto'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

function usage(msg) {
  process.stderr.write(`launcher: ${msg}\n`)
  process.stderr.write(
    'usage: node launcher.mjs plc --ready-file F [--port P] [--state-file S]\n' +
      '       node launcher.mjs pds --ready-file F --data-dir D --plc-url URL [--port P]\n' +
      '                             [--invite-required] [--rate-limits] [--secrets-file S]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const [mode, ...rest] = argv
  if (mode !== 'plc' && mode !== 'pds') usage(`unknown mode ${JSON.stringify(mode)}`)
  const flags = new Set(['--invite-required', '--rate-limits'])
  const valued = new Set(['--ready-file', '--port', '--state-file', '--data-dir', '--plc-url', '--secrets-file'])
  const opts = { mode }
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]
    const key = arg.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase())
    if (flags.has(arg)) {
      opts[key] = true
    } else if (valued.has(arg)) {
      if (i + 1 >= rest.length) usage(`${arg} needs a value`)
      opts[key] = rest[++i]
    } else {
      usage(`unknown argument ${JSON.stringify(arg)}`)
    }
  }
  if (!opts.readyFile) usage('--ready-file is required')
  opts.port = opts.port === undefined ? 0 : Number(opts.port)
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('--port must be 0..65535')
  if (mode === 'pds') {
    if (!opts.dataDir) usage('--data-dir is required for pds')
    if (!opts.plcUrl) usage('--plc-url is required for pds')
  }
  return opts
}

function log(msg) {
  process.stdout.write(`[launcher ${new Date().toISOString()}] ${msg}\n`)
}

// Write a file readable by its owner only, atomically (temp file + rename).
function writePrivateFile(file, text) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    fs.fchmodSync(fd, 0o600)
    fs.writeSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
}

async function freePort() {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function listen(app, port) {
  return await new Promise((resolve, reject) => {
    const server = app.listen(port, '127.0.0.1')
    server.once('listening', () => resolve(server))
    server.once('error', reject)
  })
}

function installShutdown(stop) {
  let stopping = false
  const handler = (signal) => {
    if (stopping) return
    stopping = true
    log(`${signal} received, shutting down`)
    // Never hang on shutdown: the parent may be waiting for us.
    setTimeout(() => {
      log('shutdown timed out, exiting')
      process.exit(0)
    }, 5000).unref()
    stop()
      .catch((err) => log(`error during shutdown: ${err?.message ?? err}`))
      .finally(() => process.exit(0))
  }
  process.on('SIGTERM', () => handler('SIGTERM'))
  process.on('SIGINT', () => handler('SIGINT'))
}

function closeServer(server) {
  return new Promise((resolve) => {
    if (!server) return resolve()
    server.close(() => resolve())
    server.closeAllConnections?.()
  })
}

// ---------------------------------------------------------------------------------------------
// PLC directory

async function runPlc(opts) {
  const plcServer = require('@did-plc/server')
  const { PlcServer, Database } = plcServer
  const db = Database.mock()

  if (opts.stateFile) {
    await restorePlcState(db, opts.stateFile)
    const addOp = db.validateAndAddOp.bind(db)
    db.validateAndAddOp = async (did, proposed) => {
      await addOp(did, proposed)
      savePlcState(db, opts.stateFile)
    }
  }

  const port = opts.port || (await freePort())
  const plc = PlcServer.create({ db, port })
  const server = await listen(plc.app, port)
  const plcUrl = `http://localhost:${server.address().port}`
  installShutdown(async () => {
    await closeServer(server)
    await db.close()
  })
  writePrivateFile(opts.readyFile, JSON.stringify({ plc_url: plcUrl }) + '\n')
  log(`PLC directory listening on ${plcUrl} (127.0.0.1)`)
}

function savePlcState(db, file) {
  const dids = {}
  for (const [did, ops] of Object.entries(db.contents)) {
    dids[did] = ops.map((op) => ({
      operation: op.operation,
      nullified: op.nullified,
      createdAt: op.createdAt instanceof Date ? op.createdAt.toISOString() : op.createdAt,
    }))
  }
  writePrivateFile(file, JSON.stringify({ version: 1, dids }))
}

async function restorePlcState(db, file) {
  if (!fs.existsSync(file)) {
    log(`PLC state file ${file} absent: starting empty`)
    return
  }
  const state = JSON.parse(fs.readFileSync(file, 'utf8'))
  let restored = 0
  let failed = 0
  for (const [did, ops] of Object.entries(state.dids ?? {})) {
    try {
      // Replaying in the original order re-validates each operation (signatures, prev chain).
      for (const saved of ops) {
        await db.validateAndAddOp(did, saved.operation)
      }
      // Keep the original timestamps and nullification marks.
      db.contents[did].forEach((op, i) => {
        if (ops[i]?.createdAt) op.createdAt = new Date(ops[i].createdAt)
        op.nullified = !!ops[i]?.nullified
      })
      restored += 1
    } catch (err) {
      failed += 1
      delete db.contents[did]
      log(`could not restore ${did} from PLC state: ${err?.message ?? err}`)
    }
  }
  log(`PLC state restored: ${restored} DIDs${failed ? `, ${failed} failed` : ''}`)
}

// ---------------------------------------------------------------------------------------------
// PDS

async function loadOrCreateSecrets(file) {
  if (fs.existsSync(file)) {
    const secrets = JSON.parse(fs.readFileSync(file, 'utf8'))
    for (const key of ['plcRotationKeyK256PrivateKeyHex', 'recoveryDidKey', 'jwtSecret', 'adminPassword']) {
      if (!secrets[key]) throw new Error(`secrets file ${file} lacks ${key}`)
    }
    fs.chmodSync(file, 0o600)
    return { secrets, created: false }
  }
  const { Secp256k1Keypair } = require('@atproto/crypto')
  const rotation = await Secp256k1Keypair.create({ exportable: true })
  const recovery = await Secp256k1Keypair.create({ exportable: true })
  const hex = async (kp) => Buffer.from(await kp.export()).toString('hex')
  const secrets = {
    plcRotationKeyK256PrivateKeyHex: await hex(rotation),
    recoveryDidKey: recovery.did(),
    recoveryKeyK256PrivateKeyHex: await hex(recovery),
    jwtSecret: crypto.randomBytes(32).toString('hex'),
    adminPassword: crypto.randomBytes(24).toString('base64url'),
  }
  writePrivateFile(file, JSON.stringify(secrets, null, 2) + '\n')
  return { secrets, created: true }
}

async function checkPlc(plcUrl) {
  try {
    const res = await fetch(new URL('/_health', plcUrl), { signal: AbortSignal.timeout(3000) })
    if (!res.ok) log(`warning: PLC directory ${plcUrl} answered /_health with HTTP ${res.status}`)
  } catch (err) {
    log(`warning: PLC directory ${plcUrl} is not reachable (${err?.cause?.code ?? err?.message ?? err}); account creation will fail`)
  }
}

async function runPds(opts) {
  // @atproto/common reads the logging variables when it is first loaded: set them before
  // importing the PDS. Logs go to stdout; the parent redirects them to a file.
  process.env.LOG_ENABLED = 'true'
  process.env.LOG_LEVEL ||= 'info'
  delete process.env.LOG_DESTINATION

  const dataDir = path.resolve(opts.dataDir)
  const blobDir = path.join(dataDir, 'blobs')
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  fs.mkdirSync(path.join(blobDir, 'tmp'), { recursive: true })
  const secretsFile = path.resolve(opts.secretsFile ?? path.join(dataDir, 'secrets.json'))
  const { secrets, created } = await loadOrCreateSecrets(secretsFile)
  log(`${created ? 'generated new' : 'loaded'} PDS secrets (${secretsFile})`)

  const plcUrl = opts.plcUrl.replace(/\/+$/, '')
  await checkPlc(plcUrl)

  const { PDS, envToCfg, envToSecrets } = require('@atproto/pds')
  const port = opts.port || (await freePort())
  const env = {
    port,
    hostname: 'localhost',
    devMode: true,
    version: '0.4.217',
    dataDirectory: dataDir,
    blobstoreDiskLocation: blobDir,
    blobstoreDiskTmpLocation: path.join(blobDir, 'tmp'),
    didPlcUrl: plcUrl,
    recoveryDidKey: secrets.recoveryDidKey,
    inviteRequired: !!opts.inviteRequired,
    rateLimitsEnabled: !!opts.rateLimits,
    serviceHandleDomains: ['.test'],
    crawlers: [],
    trustedOAuthClients: [],
    handleBackupNameservers: [],
    rateLimitBypassIps: [],
    jwtSecret: secrets.jwtSecret,
    adminPassword: secrets.adminPassword,
    plcRotationKeyK256PrivateKeyHex: secrets.plcRotationKeyK256PrivateKeyHex,
  }
  const cfg = envToCfg(env)
  const pds = await PDS.create(cfg, envToSecrets(env))
  await pds.ctx.sequencer.start()
  const server = await listen(pds.app, port)
  server.keepAliveTimeout = 90000
  pds.server = server
  const pdsUrl = `http://localhost:${server.address().port}`

  installShutdown(async () => {
    await closeServer(server)
    pds.server = undefined
    await pds.destroy()
  })
  writePrivateFile(
    opts.readyFile,
    JSON.stringify({ pds_url: pdsUrl, plc_url: plcUrl, admin_password: secrets.adminPassword }) + '\n',
  )
  log(
    `PDS listening on ${pdsUrl} (127.0.0.1), data ${dataDir}, PLC ${plcUrl}, ` +
      `invites ${opts.inviteRequired ? 'required' : 'not required'}, ` +
      `rate limits ${opts.rateLimits ? 'on' : 'off'}`,
  )
}

const opts = parseArgs(process.argv.slice(2))
try {
  if (opts.mode === 'plc') await runPlc(opts)
  else await runPds(opts)
} catch (err) {
  process.stderr.write(`launcher ${opts.mode}: failed to start: ${err?.stack ?? err}\n`)
  process.exit(1)
}
