// The parent side of one benchmark case: starts peer.js with the implementation under
// test, waits for it to be ready, then sends (one-way, fds) or ping-pongs, and prints
// one JSON line {"ok":…,"count":…,"seconds":…}.
// argv: impl mode size count [nfds]     mode: oneway | fds | pingpong
'use strict'
const childProcess = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { fill, check, identity } = require('./common')
const { spawn, socketpair } = require('..')

const [impl, mode, sizeArg, countArg, nfdsArg] = process.argv.slice(2)
const size = Number(sizeArg)
const count = Number(countArg)
const nfds = mode === 'fds' ? Number(nfdsArg || 1) : 0
const PEER = path.join(__dirname, 'peer.js')

const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-bench-')), 'target')
fs.writeFileSync(file, 'every passed descriptor points here')
const fileFd = fs.openSync(file, 'r')
const expected = identity(fileFd)
const peerArgs = [PEER, impl, mode === 'pingpong' ? 'echo' : 'recv', String(size), String(count), String(nfds), expected]

/** Resolves with the child's stdout lines as they come. */
function lines(child) {
  const waiters = []
  const buffered = []
  let partial = ''
  child.stdout.on('data', (d) => {
    partial += d
    let i
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i)
      partial = partial.slice(i + 1)
      const w = waiters.shift()
      if (w) w(line)
      else buffered.push(line)
    }
  })
  return () => (buffered.length ? Promise.resolve(buffered.shift()) : new Promise((r) => waiters.push(r)))
}

function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n')
  fs.rmSync(path.dirname(file), { recursive: true, force: true })
  process.exit(0)
}

async function main() {
  let child
  let sender // (buf, seq) => boolean|Promise
  let onReply // set for pingpong
  let close
  const buf = Buffer.alloc(size)
  const fds = Array.from({ length: nfds }, () => fileFd)

  if (impl === 'channel' || impl === 'channel-seqpacket') {
    const type = impl === 'channel' ? 'stream' : 'seqpacket'
    const s = spawn(process.execPath, peerArgs, { type, stdio: ['ignore', 'pipe', 'inherit'] })
    child = s.child
    const ch = s.channel
    ch.on('message', (m) => onReply && onReply(m.data))
    sender = (b) => ch.send(b, nfds ? { fds } : undefined) || once(ch, 'drain')
    close = () => ch.close()
  } else if (impl === 'net') {
    const [mine, theirs] = socketpair()
    child = childProcess.spawn(process.execPath, peerArgs, { stdio: ['ignore', 'pipe', 'inherit', theirs] })
    fs.closeSync(theirs)
    const socket = new net.Socket({ fd: mine, readable: true, writable: true })
    let pending = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
      while (pending.length >= 4 && pending.length - 4 >= pending.readUInt32LE(0)) {
        const len = pending.readUInt32LE(0)
        const data = pending.subarray(4, 4 + len)
        pending = pending.subarray(4 + len)
        if (onReply) onReply(data)
      }
    })
    sender = (b) => {
      const out = Buffer.allocUnsafe(4 + b.length)
      out.writeUInt32LE(b.length, 0)
      b.copy(out, 4)
      return socket.write(out) || once(socket, 'drain')
    }
    close = () => socket.destroy()
  } else if (impl === 'fork-json' || impl === 'fork-advanced') {
    const serialization = impl === 'fork-json' ? 'json' : 'advanced'
    const text = 'x'.repeat(size)
    let server = null
    if (nfds) {
      // fork() passes one handle per message, and not files: pass a listening server,
      // which the child checks by identity and closes.
      server = net.createServer()
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      peerArgs[peerArgs.length - 1] = identity(server._handle.fd)
    }
    child = childProcess.fork(PEER, peerArgs.slice(1), { serialization, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
    child.on('message', (m) => onReply && onReply(m))
    let n = 0
    sender = (b, seq) => {
      const msg = impl === 'fork-json' ? { s: seq, d: text } : { s: seq, d: b }
      // fork() has no 'drain': wait for the send callback every 64 messages (every one
      // when passing a handle, which needs an acknowledgement anyway).
      if (server || ++n % 64 === 0) {
        return new Promise((resolve, reject) => child.send(msg, server ?? undefined, (err) => (err ? reject(err) : resolve())))
      }
      child.send(msg)
      return true
    }
    close = () => {
      if (child.connected) child.disconnect()
      server?.close()
    }
  } else {
    throw new Error(`unknown impl ${impl}`)
  }

  const nextLine = lines(child)
  const exited = once(child, 'exit')
  if ((await nextLine()) !== 'ready') throw new Error('peer did not start')

  const start = process.hrtime.bigint()
  let ok = true
  if (mode === 'pingpong') {
    await new Promise((resolve) => {
      let seq = 0
      onReply = (reply) => {
        const data = impl.startsWith('fork') ? (impl === 'fork-json' ? null : Buffer.from(reply.d)) : reply
        ok = ok && (data === null ? reply.s === seq && reply.d.length === size : check(data, seq, size))
        seq++
        if (seq === count) resolve()
        else sender(fill(buf, seq), seq)
      }
      sender(fill(buf, 0), 0)
    })
  } else {
    for (let seq = 0; seq < count; seq++) {
      const r = sender(fill(buf, seq), seq)
      if (r !== true) await r
    }
  }
  const result = mode === 'pingpong' ? { ok: true, count } : JSON.parse(await nextLine())
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  close()
  await exited
  finish({
    ok: ok && result.ok && result.count === count,
    count,
    seconds,
    senderMaxRssKiB: process.resourceUsage().maxRSS,
    receiverMaxRssKiB: result.maxRssKiB,
  })
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`)
  finish({ ok: false, count: 0, seconds: 0, error: String(err) })
})
