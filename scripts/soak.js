// npm run soak — many children on their own channels, millions of messages with random
// sizes and random descriptors, children restarted at random (SIGKILL among them).
// Not part of the test suite: it takes minutes. Checks at the end:
//   * every child that was ended (not killed) got every message sent to it, exactly
//     once, in order, intact, each descriptor pointing at the right file;
//   * the parent's open descriptors are back to the baseline;
//   * RSS is flat (the curve is printed, sampled every second).
// Exits non-zero if any check fails. SOAK.md records the last run.
//
//   SOAK_MESSAGES=10000000   messages in all (default 10 million)
//   SOAK_CHILDREN=64         children alive at a time (default 64)
//   SOAK_RESTARTS=200        children restarted during the run (default 200; half SIGKILL)
//   SOAK_SEED=1              seed of the random choices (default: random, printed)
//   SOAK_FRESH_BUFFERS=1     allocate each payload anew instead of reusing one buffer
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn: spawnChild } = require('node:child_process')
const { spawn } = require('..')

const TOTAL = Number(process.env.SOAK_MESSAGES || 10_000_000)
const CHILDREN = Number(process.env.SOAK_CHILDREN || 64)
const RESTARTS = Number(process.env.SOAK_RESTARTS || 200)
const SEED = Number(process.env.SOAK_SEED || Math.floor(Math.random() * 2 ** 31))
const CHILD = path.join(__dirname, 'soak', 'child.js')
const FRESH_BUFFERS = process.env.SOAK_FRESH_BUFFERS === '1'
const scratch = Buffer.alloc(9 + 1024 * 1024)
const FD_DIR = '/proc/self/fd'

let rngState = BigInt(SEED) | 1n
function rand() {
  // xorshift64*: reproducible from the printed seed
  rngState ^= rngState >> 12n
  rngState ^= (rngState << 25n) & 0xffffffffffffffffn
  rngState ^= rngState >> 27n
  return Number(((rngState * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 11n) / 2 ** 53
}
const below = (n) => Math.floor(rand() * n)

const openFds = () => fs.readdirSync(FD_DIR).length - 1
const listFds = () =>
  fs.readdirSync(FD_DIR).map((n) => {
    try {
      return `${n}->${fs.readlinkSync(path.join(FD_DIR, n))}`
    } catch {
      return n
    }
  })
let baselineList = []
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-soak-'))
const fileFds = ['a', 'b'].map((name) => {
  const p = path.join(dir, name)
  fs.writeFileSync(p, name)
  return fs.openSync(p, 'r')
})
const fileIds = fileFds.map((fd) => {
  const s = fs.fstatSync(fd)
  return `${s.dev}:${s.ino}`
})

// Payload sizes: mostly small, a few up to 1 MiB.
function payloadLength() {
  const r = rand()
  if (r < 0.6) return 9 + below(120)
  if (r < 0.95) return 9 + below(2000)
  if (r < 0.999) return 9 + below(64 * 1024)
  return 9 + below(1024 * 1024)
}

const stats = { sent: 0, fdsSent: 0, killed: 0, ended: 0, verified: 0, failures: [], spawned: 0, killedMessages: 0 }
const slots = []
let restartsLeft = RESTARTS
const restartEvery = Math.max(1, Math.floor(TOTAL / (RESTARTS + 1)))
let nextRestartAt = restartEvery
let finishing = false
const started = Date.now()

function fail(what) {
  stats.failures.push(what)
  if (stats.failures.length <= 10) console.error(`FAIL: ${what}`)
}

function startSlot(index) {
  const { child, channel } = spawn(process.execPath, [CHILD], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, SOAK_FILE_IDS: fileIds.join(',') },
  })
  stats.spawned++
  const slot = { index, child, channel, sent: 0, state: 'live', report: null, exited: false, closed: false }
  slots[index] = slot
  channel.on('message', (m) => {
    const text = m.data.toString()
    if (text.startsWith('{')) slot.report = JSON.parse(text)
  })
  channel.on('drain', () => pump(slot))
  channel.on('error', (e) => {
    if (slot.state !== 'killed') fail(`child ${index} (${child.pid}): channel error ${e.code}: ${e.message}`)
  })
  channel.on('close', () => {
    slot.closed = true
    settle(slot)
  })
  child.on('exit', (code, signal) => {
    slot.exited = true
    if (slot.state !== 'killed' && code !== 0) fail(`child ${index} exited with ${code ?? signal}`)
    settle(slot)
  })
  setImmediate(() => pump(slot))
}

function settle(slot) {
  if (!slot.closed || !slot.exited || slot.state === 'done') return
  if (slot.state === 'ending') {
    const r = slot.report
    if (!r) fail(`child ${slot.index}: no final report`)
    else if (r.received !== slot.sent || r.bad !== 0) {
      fail(`child ${slot.index}: sent ${slot.sent}, received ${r.received}, bad ${r.bad} ${JSON.stringify(r.firstBad)}`)
    } else stats.verified += r.received
    stats.ended++
  } else {
    stats.killedMessages += slot.sent
  }
  slot.state = 'done'
  if (!finishing) startSlot(slot.index)
  else if (slots.every((s) => s.state === 'done')) finish()
}

function sendOne(slot) {
  const seq = slot.sent
  const len = payloadLength()
  // One scratch buffer, stamped per message: send() copies what it queues, so the
  // caller may reuse its memory at once, and the allocations measured are the channel's,
  // not this load generator's (SOAK_FRESH_BUFFERS=1 allocates one per message instead).
  const buf = FRESH_BUFFERS ? Buffer.allocUnsafe(len) : scratch.subarray(0, len)
  const nfds = rand() < 0.05 ? 1 + below(3) : 0
  const fill = (seq * 7) % 251
  buf.writeUInt32LE(seq, 0)
  buf[4] = nfds
  buf[5] = fill
  buf.writeUInt16LE(0, 6)
  buf.fill(fill, 8)
  const fds = []
  for (let i = 0; i < nfds; i++) fds.push(fileFds[(seq + i) % 2])
  const more = slot.channel.send(buf, nfds ? { fds } : undefined)
  slot.sent++
  stats.sent++
  stats.fdsSent += nfds
  return more
}

function pump(slot) {
  if (slot.state !== 'live') return
  for (let i = 0; i < 512; i++) {
    if (stats.sent >= TOTAL) return beginFinish()
    if (stats.sent >= nextRestartAt && restartsLeft > 0) {
      nextRestartAt += restartEvery
      restartsLeft--
      restart(slots[below(slots.length)])
      if (slot.state !== 'live') return
    }
    if (!sendOne(slot)) return // 'drain' calls pump again
  }
  setImmediate(() => pump(slot))
}

function restart(slot) {
  if (slot.state !== 'live') return
  if (rand() < 0.5) {
    slot.state = 'killed'
    stats.killed++
    slot.child.kill('SIGKILL')
    slot.channel.close()
  } else {
    endSlot(slot)
  }
}

function endSlot(slot) {
  if (slot.state !== 'live') return
  slot.state = 'ending'
  slot.channel.end()
}

function beginFinish() {
  if (finishing) return
  finishing = true
  for (const s of slots) endSlot(s)
  if (slots.every((s) => s.state === 'done')) finish()
}

const rss = []
const heap = [] // heapTotal + external: the part of RSS that V8 accounts for
const sampler = setInterval(() => {
  if (typeof global.gc === 'function') global.gc() // node --expose-gc: sample live memory only
  const m = process.memoryUsage()
  rss.push(m.rss)
  heap.push(m.heapTotal + m.external)
}, 1000)

function finish() {
  clearInterval(sampler)
  setTimeout(() => {
    fileFds.forEach((fd) => fs.closeSync(fd))
    fs.rmSync(dir, { recursive: true })
    const fdsNow = openFds()
    const secs = (Date.now() - started) / 1000
    const mib = (b) => (b / 2 ** 20).toFixed(0)
    const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? 0
    const tenth = Math.max(1, Math.floor(rss.length / 10))
    const early = median(rss.slice(tenth, 2 * tenth))
    const late = median(rss.slice(-tenth))
    const step = Math.max(1, Math.floor(rss.length / 20))
    const curve = rss.filter((_, i) => i % step === 0).map(mib)
    const flat = late - early < 64 * 2 ** 20
    console.log(`seed ${SEED}; ${CHILDREN} children alive at a time, ${stats.spawned} started`)
    console.log(
      `${stats.sent.toLocaleString('en')} messages (${stats.fdsSent.toLocaleString('en')} descriptors) in ${secs.toFixed(0)} s ` +
        `= ${Math.round(stats.sent / secs).toLocaleString('en')} msg/s`,
    )
    console.log(
      `restarts: ${stats.killed} SIGKILL (${stats.killedMessages.toLocaleString('en')} messages sent to children later killed), ` +
        `${stats.ended} ended and verified (${stats.verified.toLocaleString('en')} messages, exactly once, in order, intact)`,
    )
    console.log(`open descriptors: baseline ${baseline}, at the end ${fdsNow}`)
    if (fdsNow !== baseline) console.log(`  baseline: ${baselineList.join(' ')}\n  now: ${listFds().join(' ')}`)
    console.log(`RSS MiB every ${step} s: ${curve.join(' ')}`)
    console.log(`V8 heap (committed) + external MiB every ${step} s: ${heap.filter((_, i) => i % step === 0).map(mib).join(' ')}`)
    console.log(`RSS: ${mib(early)} MiB early, ${mib(late)} MiB late, peak ${mib(Math.max(...rss))} MiB — ${flat ? 'flat' : 'GROWING'}`)
    const ok = stats.failures.length === 0 && fdsNow === baseline && flat && stats.verified > 0
    console.log(ok ? 'soak: PASS' : `soak: FAIL (${stats.failures.length} failures)`)
    process.exit(ok ? 0 : 1)
  }, 200)
}

// Warm up the descriptors Node opens lazily (signal pipe, thread pool), then take the
// baseline before the first child.
let baseline = 0
const warm = spawnChild(process.execPath, ['-e', ''], { stdio: 'ignore' })
warm.on('exit', () => {
  setTimeout(() => {
    // stdout and stderr open lazily too: use them before the count.
    console.log(`soak: ${TOTAL.toLocaleString('en')} messages, ${CHILDREN} children, ${RESTARTS} restarts, seed ${SEED}`)
    process.stderr.write('')
    baseline = openFds() - fileFds.length // the two files are closed before the count
    baselineList = listFds()
    for (let i = 0; i < CHILDREN; i++) startSlot(i)
  }, 100)
})
