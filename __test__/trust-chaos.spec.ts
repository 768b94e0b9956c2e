/**
 * Chaos: seeded random runs of pairs in this process and of channels to Node children,
 * with listeners that throw, pause and resume, leave and come back, close and end at
 * random points, children that die in the middle of a frame or are killed at random
 * times. Every message carries its sequence number, and some a descriptor of a file
 * whose content is that number.
 *
 * Checked: on every channel each message arrives at most once and in increasing order;
 * in orderly runs (nobody closed or died) every message sent before end() arrives; every
 * received descriptor is the file its message names; no process crashes; thrown
 * listener errors reach 'uncaughtException' exactly once each; the descriptor count is
 * back to where it was (leakChecked).
 *
 * CHAOS_SEED=<n> replays a run (the seed is printed on failure); CHAOS_ITERATIONS=<n>
 * (default 40) sets its length.
 */
import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { Channel, type Message, type SocketpairError, socketpair, spawn } from '..'
import { closeAll, closing, fixture, leakChecked, readThrough } from './helpers'

const leakFree = leakChecked(test)

const SEED = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0
const ITERATIONS = Number(process.env.CHAOS_ITERATIONS ?? 40)
const ITERATION_LIMIT_MS = 10_000

/** The flow-control API being added, reached through a narrow cast. */
interface FlowControl {
  pause(): Channel
  resume(): Channel
}
const flow = (ch: Channel): FlowControl => ch as unknown as FlowControl

/** mulberry32: a small seeded generator in [0, 1). */
function generator(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** What a listener throws on purpose. */
class ChaosThrow extends Error {}

/** Shared state of one chaos run. */
class Run {
  problems: string[] = []
  thrown = 0
  caught = 0
  unexpected: string[] = []
  missingApi = new Set<string>()
  constructor(readonly dir: string) {}
  problem(iteration: number, text: string): void {
    if (this.problems.length < 50) this.problems.push(`iteration ${iteration}: ${text}`)
  }
}

/** A message: "seq:<n>:<padding length>:" then padding bytes equal to n & 0xff. */
function payload(seq: number, padding: number): Buffer {
  const head = Buffer.from(`seq:${seq}:${padding}:`)
  const out = Buffer.alloc(head.length + padding, seq & 0xff)
  head.copy(out)
  return out
}

function parse(data: Buffer): { seq: number; ok: boolean } | null {
  const m = /^seq:(\d+):(\d+):/.exec(data.toString('latin1', 0, Math.min(data.length, 40)))
  if (!m) return null
  const seq = Number(m[1])
  const padding = Number(m[2])
  const ok = data.length === m[0].length + padding && (padding === 0 || data[data.length - 1] === (seq & 0xff))
  return { seq, ok }
}

interface Receiver {
  seqs: number[]
  closedBySelf: boolean
}

/**
 * Attaches a listener that checks every message and, at random, throws, pauses (and
 * resumes later), removes itself (and comes back later), closes or ends the channel.
 */
function chaoticReceiver(
  run: Run,
  iteration: number,
  label: string,
  ch: Channel,
  random: () => number,
  withFd: Set<number>,
  options: { canClose: boolean; canEnd: boolean },
): Receiver {
  const r: Receiver = { seqs: [], closedBySelf: false }
  let last = -1
  let away = false
  const listener = (m: Message): void => {
    const parsed = parse(m.data)
    if (parsed === null) {
      run.problem(iteration, `${label}: a message that was never sent: ${JSON.stringify(m.data.toString('latin1', 0, 40))}`)
      closeAll(m.fds)
      return
    }
    const { seq, ok } = parsed
    if (!ok) run.problem(iteration, `${label}: message ${seq} is not whole`)
    if (seq <= last) run.problem(iteration, `${label}: message ${seq} after ${last} (twice, or out of order)`)
    last = Math.max(last, seq)
    r.seqs.push(seq)
    const want = withFd.has(seq) ? 1 : 0
    if (m.fds.length !== want) run.problem(iteration, `${label}: message ${seq} came with ${m.fds.length} descriptors, was sent with ${want}`)
    for (const fd of m.fds) {
      let content: string
      try {
        content = readThrough(fd)
      } catch (e) {
        content = `unreadable (${(e as NodeJS.ErrnoException).code})`
      }
      if (content !== String(seq)) run.problem(iteration, `${label}: message ${seq} came with the file of ${content}`)
    }
    closeAll(m.fds)

    const roll = random()
    if (roll < 0.02) {
      run.thrown++
      throw new ChaosThrow(`${label}: thrown on purpose at message ${seq}`)
    } else if (roll < 0.06) {
      try {
        flow(ch).pause()
        setTimeout(() => flow(ch).resume(), Math.floor(random() * 15))
      } catch {
        run.missingApi.add('pause()/resume()')
      }
    } else if (roll < 0.1) {
      if (!away) {
        away = true
        ch.off('message', listener)
        setTimeout(() => {
          away = false
          ch.on('message', listener)
        }, Math.floor(random() * 15))
      }
    } else if (roll < 0.104) {
      if (options.canClose) {
        r.closedBySelf = true
        ch.close()
      }
    } else if (roll < 0.12) {
      if (options.canEnd) ch.end()
    }
  }
  ch.on('message', listener)
  return r
}

/** Resolves on 'drain' or 'close', whichever comes first. */
function drainOrClose(ch: Channel): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      ch.off('drain', done)
      ch.off('close', done)
      resolve()
    }
    ch.on('drain', done)
    ch.on('close', done)
  })
}

/**
 * Sends messages 0..n-1 in random batches (a turn each), some large, some with a file
 * descriptor; stops early at `stopAt` or when the channel closes. Returns how many
 * messages send() accepted. `allowed` lists the send() error codes that may end it.
 */
async function sendAll(
  run: Run,
  iteration: number,
  ch: Channel,
  n: number,
  random: () => number,
  withFd: Set<number>,
  stopAt: number,
  allowed: string[],
): Promise<number> {
  let seq = 0
  while (seq < n && seq !== stopAt) {
    const batch = 1 + Math.floor(random() * 30)
    for (let k = 0; k < batch && seq < n && seq !== stopAt; k++) {
      if (ch.closed) return seq
      const big = random() < 0.03
      const data = payload(seq, big ? 40_000 + Math.floor(random() * 160_000) : Math.floor(random() * 64))
      let fd = -1
      if (random() < 0.25) {
        const file = path.join(run.dir, `${iteration}-${seq}`)
        fs.writeFileSync(file, String(seq))
        fd = fs.openSync(file, 'r')
        withFd.add(seq)
      }
      let ok: boolean
      try {
        ok = ch.send(data, fd >= 0 ? { fds: [fd] } : {})
      } catch (e) {
        const code = (e as SocketpairError).code
        if (!allowed.includes(code)) run.problem(iteration, `send() of message ${seq} threw ${code}: ${(e as Error).message}`)
        return seq
      } finally {
        if (fd >= 0) fs.closeSync(fd) // the queued message holds its own duplicate
      }
      seq++
      if (!ok) await drainOrClose(ch)
    }
    if (random() < 0.5) await new Promise((resolve) => setImmediate(resolve))
    else await sleep(Math.floor(random() * 3))
  }
  return seq
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([promise, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))]).finally(() =>
    clearTimeout(timer),
  )
}

function checkAll(run: Run, iteration: number, label: string, r: Receiver, sent: number): void {
  const missing = Array.from({ length: sent }, (_, i) => i).filter((i) => !r.seqs.includes(i))
  if (missing.length > 0) {
    run.problem(iteration, `${label}: orderly run, ${missing.length} of ${sent} messages never arrived (first: ${missing.slice(0, 5).join(', ')})`)
  }
}

/** Two channels in this process; the receiving one misbehaves. */
async function inProcess(run: Run, iteration: number, random: () => number): Promise<string> {
  const [x, y] = socketpair()
  const a = Channel.fromFd(x, { allowHalfOpen: true }) // keeps sending after b's end()
  const b = Channel.fromFd(y)
  const aErrors: string[] = []
  const bErrors: string[] = []
  a.on('error', (e) => aErrors.push(e.code))
  b.on('error', (e) => bErrors.push(e.code))
  a.on('message', () => run.problem(iteration, 'a received a message nobody sent')) // reads, to see b's end
  const withFd = new Set<number>()
  const n = 20 + Math.floor(random() * 400)
  const abrupt = random() < 0.3
  const stopAt = abrupt ? Math.floor(random() * n) : -1
  const r = chaoticReceiver(run, iteration, 'b', b, generator(Math.floor(random() * 2 ** 32)), withFd, { canClose: true, canEnd: true })
  const sent = await sendAll(run, iteration, a, n, generator(Math.floor(random() * 2 ** 32)), withFd, stopAt, ['ERR_CHANNEL_CLOSED'])
  if (abrupt) a.close()
  else a.end()
  const finished = await within(Promise.all([closing(a), closing(b)]), ITERATION_LIMIT_MS)
  if (finished === 'timeout') {
    run.problem(iteration, `in-process (${abrupt ? 'abrupt' : 'orderly'}): the pair did not close (b got ${r.seqs.length} of ${sent})`)
    a.close()
    b.close()
    await Promise.all([closing(a), closing(b)])
  }
  if (bErrors.length > 0) run.problem(iteration, `b: errors ${bErrors.join(', ')}`)
  const aAllowed = r.closedBySelf ? ['EPIPE', 'ECONNRESET'] : []
  if (aErrors.some((c) => !aAllowed.includes(c))) run.problem(iteration, `a: errors ${aErrors.join(', ')}`)
  const orderly = !abrupt && !r.closedBySelf
  if (orderly) checkAll(run, iteration, 'b', r, sent)
  return `in-process ${orderly ? 'orderly' : abrupt ? 'abrupt' : 'receiver closed'}: ${r.seqs.length}/${sent}`
}

/** A channel to a Node child that echoes; the child may die mid-frame or be killed. */
async function acrossProcesses(run: Run, iteration: number, random: () => number): Promise<string> {
  const n = 20 + Math.floor(random() * 300)
  const roll = random()
  const kind = roll < 0.4 ? 'orderly' : roll < 0.7 ? 'suicide' : 'killed'
  const args = kind === 'suicide' ? ['suicide', String(1 + Math.floor(random() * n))] : ['echo']
  const { child, channel } = spawn(process.execPath, [fixture('trust-chaos-child.js'), ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const errors: string[] = []
  channel.on('error', (e) => errors.push(e.code))
  const withFd = new Set<number>()
  const r = chaoticReceiver(run, iteration, 'parent', channel, generator(Math.floor(random() * 2 ** 32)), withFd, {
    canClose: kind !== 'orderly',
    canEnd: false, // it is also the sending side
  })
  let killer: NodeJS.Timeout | undefined
  if (kind === 'killed') killer = setTimeout(() => child.kill('SIGKILL'), Math.floor(random() * 40))
  const allowed = kind === 'orderly' ? [] : ['ERR_CHANNEL_CLOSED', 'ERR_CHANNEL_ENDED_BY_PEER', 'ERR_STREAM_WRITE_AFTER_END']
  const sent = await sendAll(run, iteration, channel, n, generator(Math.floor(random() * 2 ** 32)), withFd, -1, allowed)
  if (!channel.closed) channel.end()
  const finished = await within(Promise.all([closing(channel), exited]), ITERATION_LIMIT_MS)
  clearTimeout(killer)
  if (finished === 'timeout') {
    run.problem(iteration, `across processes (${kind}): did not finish (got ${r.seqs.length} of ${sent} echoes)`)
    channel.close()
    child.kill('SIGKILL')
    await Promise.all([closing(channel), exited])
  }
  const exit = await exited
  if (kind === 'orderly') {
    if (exit.code !== 0 || exit.signal !== null) run.problem(iteration, `orderly child exited with ${exit.code ?? exit.signal}`)
    if (errors.length > 0) run.problem(iteration, `orderly run: errors ${errors.join(', ')}`)
    checkAll(run, iteration, 'parent', r, sent)
  } else {
    if (!(exit.code === 0 || exit.signal === 'SIGKILL')) run.problem(iteration, `${kind} child crashed: ${exit.code ?? exit.signal}`)
    const allowedErrors = ['ERR_PROTOCOL', 'ECONNRESET', 'EPIPE']
    if (errors.length > 1 || errors.some((c) => !allowedErrors.includes(c))) run.problem(iteration, `${kind} run: errors ${errors.join(', ')}`)
  }
  return `child ${kind}: ${r.seqs.length}/${sent}${errors.length ? ` (${errors.join(', ')})` : ''}`
}

async function catchingUncaught<T>(run: Run, fn: () => Promise<T>): Promise<T> {
  const saved = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  const handler = (err: unknown): void => {
    if (err instanceof ChaosThrow) run.caught++
    else run.unexpected.push(String((err as Error)?.stack ?? err))
  }
  process.on('uncaughtException', handler)
  try {
    return await fn()
  } finally {
    process.off('uncaughtException', handler)
    for (const l of saved) process.on('uncaughtException', l)
  }
}

leakFree('chaos: seeded runs of misbehaving listeners, dying children and abrupt closes lose, duplicate and misplace nothing', async (t: ExecutionContext) => {
  t.timeout(Math.max(120_000, ITERATIONS * 3000))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-chaos-'))
  const run = new Run(dir)
  const summary: string[] = []
  try {
    await catchingUncaught(run, async () => {
      for (let i = 0; i < ITERATIONS; i++) {
        const random = generator(SEED + i * 0x9e3779b1)
        summary.push(random() < 0.5 ? await inProcess(run, i, random) : await acrossProcesses(run, i, random))
      }
      await sleep(50) // resume/re-add timers of the last run
    })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const orderly = summary.filter((s) => s.includes('orderly')).length
  t.log(`CHAOS_SEED=${SEED} CHAOS_ITERATIONS=${ITERATIONS}: ${orderly} orderly runs, ${run.thrown} listener throws`)
  const replay = `replay with CHAOS_SEED=${SEED} CHAOS_ITERATIONS=${ITERATIONS}`
  t.deepEqual([...run.missingApi], [], `API the run needs is missing; ${replay}`)
  t.deepEqual(run.problems, [], replay)
  t.deepEqual(run.unexpected, [], `uncaught exceptions that no listener threw; ${replay}`)
  t.is(run.caught, run.thrown, `every thrown listener error reached uncaughtException exactly once; ${replay}`)
  t.true(
    summary.some((s) => s.includes('orderly')),
    `at least one orderly run (${summary.join('; ')})`,
  )
  t.true(
    summary.some((s) => / [1-9]\d*\//.test(s)),
    'messages were received',
  )
})
