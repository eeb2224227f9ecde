'use strict'
// node-postgres client for the driver conformance lab: JSON lines in on stdin, JSON lines
// out on stdout (see tests/drivers/clients for the protocol).
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const { Client } = require('pg')

const EXTRA_VARS = ['NODE_TLS_REJECT_UNAUTHORIZED', 'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR']
const GRACE_MS = 2000 // hard wall-clock limit is timeout_ms + GRACE_MS

// U+2028/U+2029 are escaped because some line readers split on them; JSON.stringify does not.
// Writes to a pipe are synchronous on Linux, so nothing is lost on process.exit.
const emit = (obj) =>
  process.stdout.write(JSON.stringify(obj).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`) + '\n')

const oneLine = (err) => {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  return text.split(/\s+/).join(' ').trim().slice(0, 300)
}

// pg-connection-string does not export its package.json, so read the copy pg resolves.
const pcsMain = require.resolve('pg-connection-string', { paths: [path.dirname(require.resolve('pg'))] })
const pcsVersion = JSON.parse(fs.readFileSync(path.join(path.dirname(pcsMain), 'package.json'), 'utf8')).version

function setEnv(env) {
  for (const name of Object.keys(process.env)) {
    if (name.startsWith('PG') || EXTRA_VARS.includes(name)) delete process.env[name]
  }
  Object.assign(process.env, env)
}

async function attempt(req) {
  // An empty target means no connection string at all, so pg reads the PG* variables.
  const config = { connectionTimeoutMillis: req.timeout_ms }
  if (req.target) config.connectionString = req.target
  const client = new Client(config)
  // Errors emitted after a failed connect (e.g. a late socket error) must not crash us.
  client.on('error', (err) => console.error(`late client error: ${oneLine(err)}`))
  let timer
  const hardLimit = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('hard timeout: attempt abandoned')), req.timeout_ms + GRACE_MS)
  })
  try {
    await Promise.race([client.connect(), hardLimit])
  } finally {
    clearTimeout(timer)
    client.end().catch(() => {}) // not awaited: closing an abandoned attempt must not delay the next one
  }
}

async function main() {
  emit({ ready: true, driver: 'node-postgres', version: `pg ${require('pg/package.json').version}, pg-connection-string ${pcsVersion}` })
  for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (!line.trim()) continue
    let id = null
    let error = ''
    try {
      const req = JSON.parse(line)
      id = req.id
      setEnv(req.env || {})
      await attempt(req)
    } catch (err) {
      error = oneLine(err) || 'unknown error'
    }
    emit({ id, ok: !error, error })
  }
  process.exit(0) // do not wait for sockets an abandoned attempt may still hold
}

// Anything that escapes an attempt is logged, never fatal.
process.on('uncaughtException', (err) => console.error(`uncaught: ${oneLine(err)}`))
process.on('unhandledRejection', (err) => console.error(`unhandled rejection: ${oneLine(err)}`))
main()
