// The parent side of one benchmark case: starts peer.js with the implementation under
// test, waits for it to be ready, then sends (one-way, fds, retain) or ping-pongs, and
// prints one JSON line {"ok":…,"count":…,"seconds":…}.
// argv: impl mode size count [nfds]     mode: oneway | fds | pingpong | retain
//   retain: one-way, the receiver keeping every 100th message (peer.js "keep" mode)
//           and reporting the memory they hold (`retained`)
// SOCKETPAIR_BINARY (an addon build to load instead of the packaged one) is inherited by
// the peer like every other variable.
// BENCH_CORRUPT=<seq>[:<byte>] tests the verification itself: the sender flips one bit of
// that byte (default: the last) of message seq, and the case must then report ok:false
// (raw_bench honours it too).
'use strict'
const childProcess = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { messages, Framer, identity } = require('./common')
const { spawn, socketpair } = require('..')

const [impl, mode, sizeArg, countArg, nfdsArg] = process.argv.slice(2)
const size = Number(sizeArg)
const count = Number(countArg)
const nfds = mode === 'fds' ? Number(nfdsArg || 1) : 0
const PEER = path.join(__dirname, 'peer.js')
const msg = messages(size)
const corrupt = corruption()

const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-bench-')), 'target')
fs.writeFileSync(file, 'every passed descriptor points here')
const fileFd = fs.openSync(file, 'r')
const expected = identity(fileFd)
const peerMode = { pingpong: 'echo', retain: 'keep' }[mode] ?? 'recv'
const nodeFlags = mode === 'retain' ? ['--expose-gc'] : []
const peerArgs = [...nodeFlags, PEER, impl, peerMode, String(size), String(count), String(nfds), expected]

/** BENCH_CORRUPT as { seq, at }, or null. */
function corruption() {
  const spec = process.env.BENCH_CORRUPT
  if (!spec) return null
  const [seq, at = size - 1] = spec.split(':').map(Number)
  return at >= 0 && at < size ? { seq, at } : null
}

/** Flips a bit of message `seq` (in buf at `offset`) if BENCH_CORRUPT asks for it. */
function maybeCorrupt(buf, seq, offset = 0) {
  if (corrupt !== null && seq === corrupt.seq) buf[offset + corrupt.at] ^= 0x20
  return buf
}

/** `text` with the character at `at` changed. */
function corruptText(text, at) {
  return text.slice(0, at) + (text[at] === 'A' ? 'B' : 'A') + text.slice(at + 1)
}

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
  let send // (seq) => true | Promise: builds message seq and sends it
  let onReply // set for pingpong: (reply) => void
  let close
  const fds = Array.from({ length: nfds }, () => fileFd)

  if (impl === 'channel' || impl === 'channel-seqpacket') {
    const type = impl === 'channel' ? 'stream' : 'seqpacket'
    const s = spawn(process.execPath, peerArgs, { type, stdio: ['ignore', 'pipe', 'inherit'] })
    child = s.child
    const ch = s.channel
    ch.on('message', (m) => onReply && onReply(m.data))
    // Channel.send copies what it cannot write at once, so one buffer serves every
    // message (its documented contract); filling it costs the same as for net below.
    const buf = Buffer.alloc(size)
    const options = nfds ? { fds } : undefined
    send = (seq) => ch.send(maybeCorrupt(msg.fill(buf, seq), seq), options) || once(ch, 'drain')
    close = () => ch.close()
  } else if (impl === 'net') {
    const [mine, theirs] = socketpair()
    child = childProcess.spawn(process.execPath, peerArgs, { stdio: ['ignore', 'pipe', 'inherit', theirs] })
    fs.closeSync(theirs)
    const socket = new net.Socket({ fd: mine, readable: true, writable: true })
    const framer = new Framer((data) => onReply && onReply(data))
    socket.on('data', (chunk) => framer.push(chunk))
    // net.Socket#write keeps a reference to the buffer until the kernel has taken it, so
    // a buffer reused for the next message would be sent corrupted (Channel's contract
    // lets its caller reuse one; net's does not). A program sending distinct messages
    // builds each one in a fresh buffer, and a competent one leaves room for the 4-byte
    // length in front and writes the payload there: one write per message and no copy
    // of the payload. The allocation is what net costs its users; the fill is the same
    // as Channel's. (Measured against cork() + write(header) + write(payload) +
    // uncork(), which is the way when the payload comes from elsewhere: this is faster,
    // 20-30 % at 64 B and 4 KiB, and the same at 1 MiB.)
    send = (seq) => {
      const out = Buffer.allocUnsafe(4 + size)
      out.writeUInt32LE(size, 0)
      msg.fill(out, seq, 4)
      maybeCorrupt(out, seq, 4)
      return socket.write(out) || once(socket, 'drain')
    }
    close = () => socket.destroy()
  } else if (impl === 'fork-json' || impl === 'fork-advanced') {
    const serialization = impl === 'fork-json' ? 'json' : 'advanced'
    let server = null
    if (nfds) {
      // fork() passes one handle per message, and not files: pass a listening server,
      // which the child checks by identity and closes.
      server = net.createServer()
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      peerArgs[peerArgs.length - 1] = identity(server._handle.fd)
    }
    child = childProcess.fork(PEER, peerArgs.slice(nodeFlags.length + 1), {
      serialization,
      execArgv: nodeFlags,
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    })
    child.on('message', (m) => onReply && onReply(m))
    // 'advanced' serializes the Buffer during send(), so one buffer serves every message;
    // 'json' sends a string of `size` characters, different for every seq.
    const buf = Buffer.alloc(size)
    if (impl === 'fork-json') msg.text(0) // builds the text pattern before the clock starts
    const build =
      impl === 'fork-json'
        ? (seq) => ({ s: seq, d: corrupt?.seq === seq ? corruptText(msg.text(seq), corrupt.at) : msg.text(seq) })
        : (seq) => ({ s: seq, d: maybeCorrupt(msg.fill(buf, seq), seq) })
    let n = 0
    send = (seq) => {
      const m = build(seq)
      // fork() has no 'drain': wait for the send callback every 64 messages (every one
      // when passing a handle, which needs an acknowledgement anyway).
      if (server || ++n % 64 === 0) {
        return new Promise((resolve, reject) => child.send(m, server ?? undefined, (err) => (err ? reject(err) : resolve())))
      }
      child.send(m)
      return true
    }
    close = () => {
      if (child.connected) child.disconnect()
      server?.close()
    }
  } else {
    throw new Error(`unknown impl ${impl}`)
  }

  /** Is `reply` the echo of message `seq`? Every byte is compared. */
  const verifyReply =
    impl === 'fork-json'
      ? (reply, seq) => reply.s === seq && reply.d === msg.text(seq)
      : impl === 'fork-advanced'
        ? (reply, seq) => reply.s === seq && msg.check(Buffer.from(reply.d.buffer, reply.d.byteOffset, reply.d.byteLength), seq)
        : (reply, seq) => msg.check(reply, seq)

  const nextLine = lines(child)
  const exited = once(child, 'exit')
  if ((await nextLine()) !== 'ready') throw new Error('peer did not start')

  const start = process.hrtime.bigint()
  let ok = true
  if (mode === 'pingpong') {
    await new Promise((resolve) => {
      let seq = 0
      onReply = (reply) => {
        ok = ok && verifyReply(reply, seq)
        seq++
        if (seq === count) resolve()
        else send(seq)
      }
      send(0)
    })
  } else {
    for (let seq = 0; seq < count; seq++) {
      const r = send(seq)
      if (r !== true) await r
    }
  }
  const result = mode === 'pingpong' ? { ok: true, count } : JSON.parse(await nextLine())
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  close()
  await exited
  const { ok: peerOk, count: peerCount, maxRssKiB, readyRssKiB, ...extra } = result
  finish({
    ok: ok && peerOk && peerCount === count,
    count,
    seconds,
    senderMaxRssKiB: process.resourceUsage().maxRSS,
    receiverMaxRssKiB: maxRssKiB,
    receiverReadyRssKiB: readyRssKiB,
    ...extra,
  })
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`)
  finish({ ok: false, count: 0, seconds: 0, error: String(err) })
})
