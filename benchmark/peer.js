// The child side of a benchmark case: receives and verifies (recv, keep), or echoes
// (echo). argv: impl mode size count [nfds expectedIdentity]
//   recv   verify every message (and its descriptors); print the result line
//   keep   recv, and also keep the `data` of every KEEP_EVERY-th message and report how
//          much memory they hold once everything else is garbage (needs --expose-gc)
//   echo   send every message back as it is (the driver verifies the replies)
// Prints one JSON line {"ok":…,"count":…,"maxRssKiB":…} when done (recv, keep), then exits.
'use strict'
const fs = require('node:fs')
const net = require('node:net')
const { messages, Framer, lengthPrefix, sameFile } = require('./common')

const [impl, mode, sizeArg, countArg, nfdsArg, expected] = process.argv.slice(2)
const size = Number(sizeArg)
const count = Number(countArg)
const nfds = Number(nfdsArg || 0)
const msg = messages(size)
const KEEP_EVERY = Math.max(1, Math.floor(count / 100)) // always 100 kept
let seq = 0
let ok = true
const isExpected = sameFile(expected || '0:0')
const kept = [] // keep mode: [seq, data]
let baseline = null // keep mode: memoryUsage() before anything was received
let close = () => {}

/** Verifies one received message (and its descriptors, then closes them). */
function receive(data, fds) {
  ok = ok && msg.check(data, seq)
  if (nfds) {
    ok = ok && fds.length === nfds
    for (const fd of fds) ok = ok && isExpected(fd)
  }
  if (mode === 'keep' && seq % KEEP_EVERY === 0) kept.push([seq, data])
  seq++
}

/** Called once the last message has arrived: reports and ends. */
function done() {
  if (mode !== 'keep') {
    report({})
    close()
    return
  }
  // Measured twice: with the channel still open (its own working buffers count too),
  // and after closing it, when only the kept messages can hold memory. Both after full
  // collections, with turns of the event loop between them for finalizers.
  settle()
    .then(() => {
      const open = memory()
      close()
      return settle().then(() => [open, memory()])
    })
    .then(([open, closed]) => {
      // The kept messages must still be intact: nothing may have reused their memory.
      for (const [s, data] of kept) ok = ok && msg.check(data, s)
      const delta = (m) => ({
        external: m.external - baseline.external,
        arrayBuffers: m.arrayBuffers - baseline.arrayBuffers,
        rss: m.rss - baseline.rss,
      })
      // What the kept views pin: their distinct backing ArrayBuffers.
      const backing = new Set(kept.map(([, data]) => data.buffer))
      const pinned = { buffers: backing.size, bytes: [...backing].reduce((n, b) => n + b.byteLength, 0) }
      report({ kept: kept.length, retained: delta(closed), retainedOpen: delta(open), pinned })
    })
}

let readyRssKiB = 0 // RSS when set up, before receiving: peak RSS minus this is what receiving cost

function report(extra) {
  const maxRssKiB = process.resourceUsage().maxRSS
  process.stdout.write(JSON.stringify({ ok, count: seq, maxRssKiB, readyRssKiB, ...extra }) + '\n')
}

function memory() {
  const m = process.memoryUsage()
  return { rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers }
}

async function settle() {
  for (let i = 0; i < 4; i++) {
    global.gc()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

if (impl === 'channel' || impl === 'channel-seqpacket') {
  const { Channel, closeFds } = require('..')
  const ch = Channel.fromParent()
  close = () => ch.close()
  ch.on('message', (m) => {
    if (mode === 'echo') {
      ch.send(m.data)
      return
    }
    receive(m.data, m.fds)
    if (m.fds.length) closeFds(m.fds)
    if (seq === count) done()
  })
} else if (impl === 'net') {
  const socket = new net.Socket({ fd: 3, readable: true, writable: true })
  close = () => socket.destroy()
  const ECHO_COPY_MAX = 16 << 10
  const framer = new Framer((data) => {
    if (mode === 'echo') {
      // Small: header and payload copied into one buffer, one write (cheaper than two
      // writes for a few bytes). Large: header and payload in one writev, the payload
      // not copied (nothing reuses it: every chunk net.Socket reads is a fresh buffer).
      if (data.length <= ECHO_COPY_MAX) {
        const out = Buffer.allocUnsafe(4 + data.length)
        out.writeUInt32LE(data.length, 0)
        data.copy(out, 4)
        socket.write(out)
      } else {
        socket.cork()
        socket.write(lengthPrefix(data.length))
        socket.write(data)
        socket.uncork()
      }
      return true
    }
    receive(data, [])
    if (seq === count) {
      done()
      return false
    }
    return true
  })
  socket.on('data', (chunk) => framer.push(chunk))
} else if (impl === 'fork-json' || impl === 'fork-advanced') {
  if (impl === 'fork-json') msg.text(0) // builds the text pattern before the clock starts
  close = () => process.disconnect()
  process.on('message', (m, handle) => {
    if (mode === 'echo') {
      process.send(m)
      return
    }
    if (impl === 'fork-json') {
      // The whole string, compared with the one the sender built for this seq.
      ok = ok && m.s === seq && m.d === msg.text(seq)
      seq++
    } else {
      ok = ok && m.s === seq
      receive(Buffer.from(m.d.buffer, m.d.byteOffset, m.d.byteLength), [])
    }
    if (handle) {
      ok = ok && isExpected(handle._handle.fd)
      handle.close()
    } else if (nfds) {
      ok = false
    }
    if (seq === count) done()
  })
} else {
  throw new Error(`unknown impl ${impl}`)
}

// Set up: tell the driver to start the clock (keep mode: after the baseline).
if (mode === 'keep') {
  if (typeof global.gc !== 'function') throw new Error('keep mode needs node --expose-gc')
  settle().then(() => {
    baseline = memory()
    readyRssKiB = Math.round(baseline.rss / 1024)
    fs.writeSync(1, 'ready\n')
  })
} else {
  readyRssKiB = Math.round(process.memoryUsage.rss() / 1024)
  fs.writeSync(1, 'ready\n')
}
