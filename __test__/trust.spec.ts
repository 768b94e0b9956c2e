/**
 * Can the channel be trusted when things go wrong? Peer death with unread data, listeners
 * that throw, pause or go away mid-batch, flow control (pause/resume, a byte-bounded async
 * iterator), queued sends that the kernel refuses, close() in the middle of a frame,
 * empty records, a peer that changes the shared socket under us, misuse, leaks, argument
 * checks and error fields. Real processes and descriptors throughout; every test checks
 * that the open-descriptor count is back where it started (leakChecked).
 *
 * Some tests use API the package is getting (pause/resume/isPaused, iterator(), a send()
 * callback, readableHighWaterMark): they reach it through the narrow casts below, so that
 * this file type-checks before and after.
 */
import test, { type ExecutionContext } from 'ava'
import { spawn as spawnProcess, type SpawnOptions as NodeSpawnOptions } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'

import {
  Channel,
  closeFds,
  type Message,
  type PairOptions,
  type SendOptions,
  type SocketpairError,
  recvmsg,
  sendmsg,
  socketpair,
  spawn,
} from '..'
import { catchingUncaught, closeAll, closeBoth, closing, fixture, identity, leakChecked, openFdCount, readThrough, tempFile } from './helpers'

const leakFree = leakChecked(test)
const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------
// The API being added, reached through narrow casts.

interface FlowControl {
  pause(): Channel
  resume(): Channel
  isPaused(): boolean
}
const flow = (ch: Channel): FlowControl => ch as unknown as FlowControl

interface ByteBoundedIteration {
  iterator(options?: { highWaterMark?: number }): AsyncIterableIterator<Message>
}
const iterating = (ch: Channel): ByteBoundedIteration => ch as unknown as ByteBoundedIteration

type SendCallback = (err?: SocketpairError | null) => void
const sendWithCallback = (ch: Channel, data: string | Uint8Array, options: SendOptions, cb: SendCallback): boolean =>
  (ch.send as unknown as (d: string | Uint8Array, o: SendOptions, c: SendCallback) => boolean).call(ch, data, options, cb)

type ReadableOptions = PairOptions & { readableHighWaterMark?: number }

/** Node's system-error fields, which every OS error of the package should carry. */
type SystemError = SocketpairError & { errno?: number; syscall?: string }

// ---------------------------------------------------------------------------------------
// Helpers.

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects with `what` if `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} (nothing within ${ms} ms)`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Polls `condition` every 5 ms; true once it holds, false after `ms`. */
async function waitFor(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(5)
  }
  return true
}

/** PROTOCOL.md's header: length u32 LE, nfds u16 LE, version 1, flags 0. */
function frame(payload: Buffer | string, nfds = 0): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(8)
  header.writeUInt32LE(body.length, 0)
  header.writeUInt16LE(nfds, 4)
  header[6] = 1
  return Buffer.concat([header, body])
}

/** Channels that a failed test leaves open are closed after it (a passing test closes its own). */
function track(t: ExecutionContext, ...channels: Channel[]): void {
  t.teardown(() => channels.forEach((c) => c.close()))
}

/** A pair whose errors are recorded (an 'error' with no listener would crash the run). */
function pair(t: ExecutionContext, options: ReadableOptions = {}): { a: Channel; b: Channel; errors: string[] } {
  const [a, b] = Channel.pair(options)
  track(t, a, b)
  const errors: string[] = []
  a.on('error', (e) => errors.push(`a:${e.code}`))
  b.on('error', (e) => errors.push(`b:${e.code}`))
  return { a, b, errors }
}

interface Recorded {
  /** 'message:<payload>', 'end', 'error:<code>', 'close', in order. */
  events: string[]
  /** The contents of the files that came with each message. */
  files: string[][]
  errors: SystemError[]
}

/** Records everything `ch` emits; received descriptors are read and closed. */
function record(ch: Channel): Recorded {
  const r: Recorded = { events: [], files: [], errors: [] }
  ch.on('message', (m) => {
    r.events.push(`message:${m.data}`)
    r.files.push(m.fds.map(readThrough))
    closeAll(m.fds)
  })
  ch.on('end', () => r.events.push('end'))
  ch.on('error', (e) => {
    r.errors.push(e as SystemError)
    r.events.push(`error:${e.code}`)
  })
  ch.on('close', () => r.events.push('close'))
  return r
}


interface Finished {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Killed by us after the time limit. */
  timedOut: boolean
}

/** Runs a process to its end (SIGKILL after `ms`); never rejects. */
function runToEnd(command: string, args: string[], ms: number, options: NodeSpawnOptions = {}): Promise<Finished> {
  return new Promise((resolve) => {
    const child = spawnProcess(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, ms)
    child.on('error', (err) => {
      clearTimeout(timer)
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}${err.message}`, timedOut })
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, timedOut })
    })
  })
}

/** The last JSON line a child printed. */
function report<T>(f: Finished): T {
  const lines = f.stdout.trim().split('\n')
  return JSON.parse(lines[lines.length - 1]!) as T
}

/** A GC function, in this process too (where ava gives no --expose-gc). */
function gcFunction(): () => void {
  v8.setFlagsFromString('--expose-gc')
  return vm.runInNewContext('gc') as () => void
}

/** Open descriptors of this process whose link mentions `word`. */
function linksContaining(word: string): number {
  let n = 0
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${name}`).includes(word)) n++
    } catch {
      // the listing's own descriptor, gone by now
    }
  }
  return n
}

function fdFlags(fd: number): number {
  const m = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))
  return parseInt(m![1]!, 8)
}

function tempDir(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-trust-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

// ---------------------------------------------------------------------------------------
// 1. Data is not lost on peer death.

leakFree('peer closes with our message unread: we still get its three messages, then ECONNRESET (recvmsg), then close', async (t) => {
  const { a, b } = pair(t)
  a.send('unread')
  b.send('1')
  b.send('2')
  b.send('3')
  await tick() // both queues are written
  b.close() // with 'unread' still in its receive queue: the kernel resets the connection
  await closing(b)
  const seen = record(a) // only now does a start reading
  await within(closing(a), 5000, 'a never closed')
  t.deepEqual(seen.events, ['message:1', 'message:2', 'message:3', 'error:ECONNRESET', 'close'])
  const err = seen.errors.find((e) => e.code === 'ECONNRESET')
  t.is(err?.syscall, 'recvmsg')
  t.is(typeof err?.errno, 'number')
})

leakFree('peer closes with nothing unread: we get its three messages, then end, then close, and no error', async (t) => {
  const { a, b } = pair(t)
  b.send('1')
  b.send('2')
  b.send('3')
  await tick()
  b.close()
  await closing(b)
  const seen = record(a)
  await within(closing(a), 5000, 'a never closed')
  t.deepEqual(seen.events, ['message:1', 'message:2', 'message:3', 'end', 'close'])
})

for (const mode of ['kill', 'exit'] as const) {
  leakFree(`a child that ${mode === 'kill' ? 'is SIGKILLed' : 'exits'} without reading: its three messages arrive with their files, then ECONNRESET or end, then close`, async (t) => {
    const files = [tempFile('file 0'), tempFile('file 1'), tempFile('file 2')]
    const { child, channel } = spawn(process.execPath, [fixture('trust-peer-death.js'), mode, ...files.map((f) => f.path)], {
      stdio: ['pipe', 'inherit', 'inherit'],
    })
    track(t, channel)
    child.stdin!.on('error', () => {})
    const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>
    channel.send('never read by the child')
    await tick() // written: it sits unread in the child's socket
    child.stdin!.end('go\n')
    const [code, signal] = await within(exited, 10_000, 'the child did not exit')
    if (mode === 'kill') t.is(signal, 'SIGKILL')
    else t.is(code, 0)
    const seen = record(channel) // the child is gone before we read anything
    await within(closing(channel), 5000, 'the channel never closed')
    t.deepEqual(seen.events.slice(0, 3), ['message:child 0', 'message:child 1', 'message:child 2'])
    t.deepEqual(seen.files, [['file 0'], ['file 1'], ['file 2']])
    t.true(seen.events[3] === 'error:ECONNRESET' || seen.events[3] === 'end', `then: ${seen.events.slice(3).join(', ')}`)
    t.is(seen.events[4], 'close')
    t.is(seen.events.length, 5)
    closeAll(files.map((f) => f.fd))
  })
}

// ---------------------------------------------------------------------------------------
// 2. A listener that throws, closes or leaves mid-batch.

leakFree('a listener that throws at message 3 of a batch of 10: the error reaches uncaughtException once, and messages 4..10 still arrive in order with their files', async (t) => {
  await catchingUncaught(async (uncaught) => {
    const { a, b, errors } = pair(t)
    const files = Array.from({ length: 10 }, (_, i) => tempFile(`file ${i + 1}`))
    const boom = new Error('the listener failed on message 3')
    const got: { data: string; ids: string[]; contents: string[] }[] = []
    b.on('message', (m) => {
      got.push({ data: m.data.toString(), ids: m.fds.map(identity), contents: m.fds.map(readThrough) })
      closeAll(m.fds)
      if (got.length === 3) throw boom
    })
    files.forEach((f, i) => a.send(`m${i + 1}`, { fds: [f.fd] })) // one turn: one write, one read
    await waitFor(() => got.length >= 10, 3000)
    await sleep(50)
    t.deepEqual(
      got.map((g) => g.data),
      files.map((_, i) => `m${i + 1}`),
    )
    t.deepEqual(
      got.map((g) => g.ids),
      files.map((f) => [identity(f.fd)]),
    )
    t.deepEqual(
      got.map((g) => g.contents),
      files.map((_, i) => [`file ${i + 1}`]),
    )
    t.is(uncaught.length, 1)
    t.is(uncaught[0], boom)
    t.deepEqual(errors, [])
    await closeBoth(a, b)
    closeAll(files.map((f) => f.fd))
  })
})

leakFree('a listener that closes the channel at message 3: messages 4..10 are not delivered and their descriptors are closed', async (t) => {
  const { a, b, errors } = pair(t)
  const files = Array.from({ length: 10 }, (_, i) => tempFile(`file ${i + 1}`))
  const got: string[] = []
  b.on('message', (m) => {
    got.push(`${m.data}:${m.fds.map(readThrough).join(',')}`)
    closeAll(m.fds)
    if (got.length === 3) b.close()
  })
  files.forEach((f, i) => a.send(`m${i + 1}`, { fds: [f.fd] }))
  await within(closing(b), 5000, 'b never closed')
  await sleep(50)
  t.deepEqual(got, ['m1:file 1', 'm2:file 2', 'm3:file 3'])
  t.deepEqual(errors, [])
  a.close()
  await closing(a)
  closeAll(files.map((f) => f.fd))
  // The leak check proves that the descriptors of messages 4..10 were closed.
})

leakFree('a listener that removes itself at message 3: a listener added 50 ms later receives 4..10 with their files (nothing dropped)', async (t) => {
  const { a, b, errors } = pair(t)
  const files = Array.from({ length: 10 }, (_, i) => tempFile(`file ${i + 1}`))
  const first: string[] = []
  const second: string[] = []
  const onFirst = (m: Message): void => {
    first.push(`${m.data}:${m.fds.map(readThrough).join(',')}`)
    closeAll(m.fds)
    if (first.length === 3) b.off('message', onFirst)
  }
  b.on('message', onFirst)
  files.forEach((f, i) => a.send(`m${i + 1}`, { fds: [f.fd] }))
  await sleep(50)
  b.on('message', (m) => {
    second.push(`${m.data}:${m.fds.map(readThrough).join(',')}`)
    closeAll(m.fds)
  })
  await waitFor(() => second.length >= 7, 2000)
  await sleep(20)
  t.deepEqual(first, ['m1:file 1', 'm2:file 2', 'm3:file 3'])
  t.deepEqual(
    second,
    [4, 5, 6, 7, 8, 9, 10].map((i) => `m${i}:file ${i}`),
  )
  t.deepEqual(errors, [])
  await closeBoth(a, b)
  closeAll(files.map((f) => f.fd))
})

// ---------------------------------------------------------------------------------------
// 3. Nothing is dropped for want of a listener.

leakFree('await once(channel, "message") twice yields messages 1 and 2, although both came in one read', async (t) => {
  const { a, b } = pair(t)
  a.send('1')
  a.send('2')
  const [m1] = (await within(once(b, 'message'), 2000, 'message 1 never came')) as [Message]
  const [m2] = (await within(once(b, 'message'), 2000, 'message 2 was dropped for want of a listener')) as [Message]
  t.is(m1.data.toString(), '1')
  t.is(m2.data.toString(), '2')
  await closeBoth(a, b)
})

leakFree('five messages with descriptors, awaited with once() one after another: all five, each with its file', async (t) => {
  const { a, b } = pair(t)
  const files = Array.from({ length: 5 }, (_, i) => tempFile(`file ${i}`))
  files.forEach((f, i) => a.send(`m${i}`, { fds: [f.fd] }))
  for (let i = 0; i < 5; i++) {
    const [m] = (await within(once(b, 'message'), 2000, `message ${i} was dropped for want of a listener`)) as [Message]
    t.is(m.data.toString(), `m${i}`)
    t.deepEqual(m.fds.map(identity), [identity(files[i]!.fd)])
    t.deepEqual(m.fds.map(readThrough), [`file ${i}`])
    closeAll(m.fds)
  }
  await closeBoth(a, b)
  closeAll(files.map((f) => f.fd))
})

// ---------------------------------------------------------------------------------------
// 4. pause() / resume() / isPaused().

leakFree('isPaused() is false on a new channel, before any listener is attached', (t) => {
  const [a, b] = Channel.pair()
  track(t, a, b)
  t.is(typeof flow(b).isPaused, 'function', 'isPaused() exists')
  t.false(flow(b).isPaused())
  a.close()
  b.close()
})

leakFree('pause(): no messages while paused, the sender feels backpressure; resume(): every message arrives once, in order', async (t) => {
  const { a, b, errors } = pair(t)
  t.is(flow(b).pause(), b, 'pause() returns this')
  t.true(flow(b).isPaused())
  const got: { seq: number; ok: boolean }[] = []
  b.on('message', (m) => {
    const seq = m.data.readUInt32LE(0)
    got.push({ seq, ok: m.data.length === 64 * 1024 && m.data[m.data.length - 1] === (seq & 0xff) })
  })
  const chunk = Buffer.alloc(64 * 1024)
  let sent = 0
  let blocked = false
  while (sent * chunk.length < 200 * MiB) {
    chunk.writeUInt32LE(sent, 0)
    chunk[chunk.length - 1] = sent & 0xff
    sent++
    if (!a.send(chunk)) {
      const drained = await Promise.race([once(a, 'drain').then(() => true), sleep(300).then(() => false)])
      if (!drained) {
        blocked = true
        break
      }
    }
  }
  t.true(blocked, `send() returned false and no drain followed (sent ${sent} messages)`)
  await sleep(100)
  t.is(got.length, 0, 'nothing was delivered while paused')
  t.is(flow(b).resume(), b, 'resume() returns this')
  t.false(flow(b).isPaused())
  await waitFor(() => got.length >= sent, 10_000)
  await sleep(50)
  t.is(got.length, sent)
  t.true(
    got.every((g, i) => g.seq === i && g.ok),
    'in order, each whole',
  )
  t.deepEqual(errors, [])
  await closeBoth(a, b)
})

leakFree('pause() inside a listener at message 3 of a batch of 10: nothing more until resume(), then 4..10 in order', async (t) => {
  const { a, b, errors } = pair(t)
  const got: string[] = []
  const failures: string[] = []
  b.on('message', (m) => {
    got.push(m.data.toString())
    if (got.length === 3) {
      try {
        flow(b).pause()
      } catch (e) {
        failures.push(String(e)) // not thrown from the listener: that would end the run
      }
    }
  })
  for (let i = 1; i <= 10; i++) a.send(`m${i}`)
  await waitFor(() => got.length >= 3, 2000)
  await sleep(100)
  t.deepEqual(failures, [], 'pause() works inside a listener')
  t.deepEqual(got, ['m1', 'm2', 'm3'], 'nothing after pause()')
  t.true(failures.length === 0 && flow(b).isPaused())
  if (failures.length === 0) flow(b).resume()
  await waitFor(() => got.length >= 10, 2000)
  await sleep(20)
  t.deepEqual(
    got,
    Array.from({ length: 10 }, (_, i) => `m${i + 1}`),
  )
  t.deepEqual(errors, [])
  await closeBoth(a, b)
})

// ---------------------------------------------------------------------------------------
// 5. An async iterator bounded in bytes.

/** Sends `count` messages of 1 MiB (u32 sequence number first, its low byte last), honouring backpressure, then ends. */
async function sendMebibytes(a: Channel, count: number): Promise<void> {
  const chunk = Buffer.alloc(MiB) // reused: send() copies
  for (let i = 0; i < count; i++) {
    chunk.writeUInt32LE(i, 0)
    chunk[MiB - 1] = i & 0xff
    if (!a.send(chunk)) await once(a, 'drain')
  }
  a.end()
}

async function consumeSlowly(
  t: ExecutionContext,
  messages: AsyncIterable<Message>,
  gc: () => void,
): Promise<{ count: number; peak: number }> {
  gc()
  const base = process.memoryUsage().arrayBuffers
  let count = 0
  let peak = 0
  for await (const m of messages) {
    if (m.data.length !== MiB || m.data.readUInt32LE(0) !== count || m.data[MiB - 1] !== (count & 0xff)) {
      t.fail(`message ${count} is not what was sent`)
    }
    count++
    await sleep(5)
    gc()
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - base)
  }
  return { count, peak }
}

leakFree('iterator({ highWaterMark: 4 MiB }): 64 messages of 1 MiB to a slow consumer, memory stays bounded, every message arrives', async (t) => {
  t.timeout(60_000)
  const gc = gcFunction()
  const { a, b, errors } = pair(t)
  a.on('message', () => {}) // reads, so that it sees b's end and closes
  t.is(typeof iterating(b).iterator, 'function', 'iterator() exists')
  const sending = sendMebibytes(a, 64)
  const { count, peak } = await consumeSlowly(t, iterating(b).iterator({ highWaterMark: 4 * MiB }), gc)
  await sending
  t.is(count, 64)
  t.true(peak < 24 * MiB, `array buffers grew by at most ${(peak / MiB).toFixed(1)} MiB`)
  await Promise.all([closing(a), closing(b)])
  t.deepEqual(errors, [])
})

leakFree('for await with readableHighWaterMark: 4 MiB: 64 messages of 1 MiB to a slow consumer, memory stays bounded', async (t) => {
  t.timeout(60_000)
  const gc = gcFunction()
  const { a, b, errors } = pair(t, { readableHighWaterMark: 4 * MiB })
  a.on('message', () => {})
  const sending = sendMebibytes(a, 64)
  const { count, peak } = await consumeSlowly(t, b, gc)
  await sending
  t.is(count, 64)
  t.true(peak < 24 * MiB, `array buffers grew by ${(peak / MiB).toFixed(1)} MiB (the consumer buffered without a byte bound)`)
  await Promise.all([closing(a), closing(b)])
  t.deepEqual(errors, [])
})

leakFree('breaking out of iterator() early closes the descriptors of messages buffered but not yielded', async (t) => {
  const { a, b, errors } = pair(t)
  const file = tempFile('buffered')
  for (let i = 0; i < 20; i++) a.send(`m${i}`, { fds: [file.fd] })
  t.is(typeof iterating(b).iterator, 'function', 'iterator() exists')
  let n = 0
  for await (const m of iterating(b).iterator({ highWaterMark: MiB })) {
    t.is(m.data.toString(), `m${n}`)
    t.deepEqual(m.fds.map(identity), [identity(file.fd)])
    closeAll(m.fds)
    if (++n === 3) break
  }
  t.is(n, 3)
  await sleep(50)
  t.false(b.closed, 'the channel itself stays open')
  t.deepEqual(errors, [])
  await closeBoth(a, b)
  closeAll([file.fd])
})

// ---------------------------------------------------------------------------------------
// 6. The child can reply after the parent ended.

leakFree('a child iterating with for await (default options) can reply after the parent ended, and exits 0', async (t) => {
  const { child, channel } = spawn(process.execPath, [fixture('trust-reply-after-end.js')], { stdio: ['ignore', 'inherit', 'inherit'] })
  track(t, channel)
  t.teardown(() => child.kill('SIGKILL'))
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>
  const seen = record(channel)
  for (let i = 0; i < 3; i++) channel.send(`m${i}`)
  channel.end()
  await within(closing(channel), 10_000, 'the channel never closed')
  const [code] = await within(exited, 10_000, 'the child did not exit by itself')
  t.deepEqual(seen.events, ['message:got 3', 'end', 'close'])
  t.is(code, 0)
})

// ---------------------------------------------------------------------------------------
// 7. Queued sends cannot kill the channel.

leakFree('seqpacket: with records queued, a record too large for the socket throws ERR_MESSAGE_TOO_LARGE, queues nothing; the earlier ones arrive and the channel works', async (t) => {
  const { a, b, errors } = pair(t, { type: 'seqpacket' })
  const record100k = (i: number): Buffer => {
    const r = Buffer.alloc(100 * 1024, i & 0xff)
    r.writeUInt32LE(i, 0)
    return r
  }
  let sent = 0
  while (a.bufferedBytes === 0 && sent < 1000) a.send(record100k(sent++))
  t.true(a.bufferedBytes > 0, 'something is queued')
  const queuedBefore = a.bufferedBytes
  t.throws(() => a.send(Buffer.alloc(4 * MiB)), { code: 'ERR_MESSAGE_TOO_LARGE' })
  t.is(a.bufferedBytes, queuedBefore, 'nothing of it was queued')
  const got: Buffer[] = []
  b.on('message', (m) => got.push(m.data))
  await waitFor(() => got.length >= sent, 3000)
  await sleep(50)
  t.is(got.length, sent)
  t.true(
    got.every((m, i) => m.length === 100 * 1024 && m.readUInt32LE(0) === i && m[m.length - 1] === (i & 0xff)),
    'every earlier record, in order',
  )
  t.false(a.closed, 'the channel stays open')
  if (!a.closed) a.send('still works')
  await waitFor(() => got.length > sent, 2000)
  t.is(got[sent]?.toString(), 'still works')
  t.deepEqual(errors, [])
  await closeBoth(a, b)
})

interface RefusedReport {
  unavailable?: number
  kind: string
  errors: string[]
  queued: { callback: unknown; threw: unknown; sends: string[]; got: string[]; closed: boolean }
  direct: { threw: unknown; got: string[]; closed: boolean }
}

leakFree('a descriptor the kernel refuses (io_uring): queued, only that message fails (callback EINVAL, sendmsg) and the others arrive; direct, send() throws EINVAL; the channel stays open', async (t) => {
  // Node cannot create an io_uring instance, and the kernel will not pass one over
  // SCM_RIGHTS: a python3 process creates it and execs node with it inherited.
  const f = await runToEnd('python3', [fixture('trust-uring-exec.py'), process.execPath, fixture('trust-refused-fd.js')], 20_000)
  t.false(f.timedOut)
  t.is(f.code, 0, f.stderr)
  const r = report<RefusedReport>(f)
  if (r.unavailable !== undefined) {
    t.log(`io_uring_setup failed with errno ${r.unavailable}: not tested here`)
    t.pass()
    return
  }
  t.is(r.kind, 'anon_inode:[io_uring]')
  t.deepEqual(r.queued.sends, ['before:ok', 'refused:ok', 'after:ok'], 'queued: send() itself does not throw')
  t.like(r.queued.callback, { code: 'EINVAL', syscall: 'sendmsg' }, 'the callback of the refused message gets EINVAL')
  t.deepEqual(r.queued.got, ['before', 'after'], 'the messages around it arrive')
  t.false(r.queued.closed, 'the channel stays open')
  t.like(r.direct.threw, { code: 'EINVAL', syscall: 'sendmsg' }, 'send() throws on the direct path')
  t.deepEqual(r.direct.got, ['after direct'])
  t.false(r.direct.closed)
  t.deepEqual(r.errors, [])
})

// ---------------------------------------------------------------------------------------
// 8. close() writes whole frames only.

/** A million small sends, then close(): what the peer sees (and whether each message was the next one). */
async function millionThenClose(
  t: ExecutionContext,
  sends = 1e6,
  whileLingering?: () => Promise<void>,
): Promise<{ n: number; gaps: number; events: string[] }> {
  const [a, b] = Channel.pair()
  track(t, a, b)
  const events: string[] = []
  let n = 0
  let gaps = 0
  b.on('message', (m) => {
    if (m.data.toString() !== `m${n}`) gaps++
    n++
  })
  b.on('end', () => events.push('end'))
  b.on('error', (e) => events.push(`error:${e.code}`))
  b.on('close', () => events.push('close'))
  a.on('error', (e) => events.push(`a-error:${e.code}`))
  // With `whileLingering`, the reader waits: a's last frame is still being written
  // after close() while it runs.
  if (whileLingering) flow(b).pause()
  for (let i = 0; i < sends; i++) a.send(`m${i}`)
  a.close()
  if (whileLingering) {
    await whileLingering()
    flow(b).resume()
  }
  await within(closing(b), 30_000, 'b never closed')
  return { n, gaps, events }
}

leakFree('close() right after a million sends: the peer gets a gapless prefix, then end and close, never ERR_PROTOCOL', async (t) => {
  t.timeout(60_000)
  const { n, gaps, events } = await millionThenClose(t)
  t.true(n > 0, 'some messages arrived')
  t.is(gaps, 0)
  t.deepEqual(events, ['end', 'close'], `after ${n} whole messages`)
})

leakFree('a closed channel finishing its last frame is not cut short when its JS object is garbage-collected', async (t) => {
  t.timeout(60_000)
  const gc = gcFunction()
  for (let round = 0; round < 3; round++) {
    const { n, gaps, events } = await millionThenClose(t, 300_000, async () => {
      // Nothing refers to the closed sender any more: collect it while it lingers.
      for (let i = 0; i < 5; i++) {
        gc()
        await new Promise((resolve) => setImmediate(resolve))
      }
    })
    t.true(n > 0)
    t.is(gaps, 0)
    t.deepEqual(events, ['end', 'close'], `round ${round}: after ${n} whole messages`)
  }
})

leakFree('close() right after a million sends, read by python3: the stream ends on a frame boundary with a gapless prefix', async (t) => {
  t.timeout(60_000)
  const { child, channel } = spawn('python3', [fixture('trust-frame-reader.py')], { stdio: ['ignore', 'pipe', 'inherit'] })
  track(t, channel)
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'close') as Promise<[number | null]>
  const errors: string[] = []
  channel.on('error', (e) => errors.push(e.code))
  for (let i = 0; i < 1e6; i++) channel.send(`m${i}`)
  channel.close()
  const [code] = await within(exited, 30_000, 'the reader did not finish')
  t.is(code, 0)
  const r = JSON.parse(out) as { count: number; inOrder: boolean; boundary: boolean; error: string | null }
  t.true(r.count > 0)
  t.true(r.inOrder)
  t.true(r.boundary, r.error ?? 'the stream ended inside a frame')
  t.deepEqual(errors, [])
})

// ---------------------------------------------------------------------------------------
// 9. A 0-byte seqpacket record is not the end of the stream.

leakFree('seqpacket channel: an empty record from a python3 peer is ERR_PROTOCOL, not end', async (t) => {
  const { child, channel } = spawn('python3', [fixture('trust-seqpacket-empty.py')], {
    type: 'seqpacket',
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  track(t, channel)
  t.teardown(() => child.kill('SIGKILL'))
  child.stdin!.on('error', () => {})
  const exited = once(child, 'close') as Promise<[number | null]>
  await once(child.stdout!, 'data') // all three records are in our socket
  const seen = record(channel)
  await within(closing(channel), 5000, 'the channel never closed')
  child.stdin!.end('\n')
  const [code] = await within(exited, 5000, 'the peer did not exit')
  t.is(code, 0)
  t.deepEqual(seen.events, ['message:first', 'error:ERR_PROTOCOL', 'close'])
})

leakFree('seqpacket, low level: recvmsg() of an empty record returns empty data (not null); null only once the peer has closed', (t) => {
  const [x, y] = socketpair('seqpacket')
  t.is(sendmsg(x, ''), 0)
  sendmsg(x, 'x')
  const empty = recvmsg(y)
  t.not(empty, null, 'an empty record is not the end of the stream')
  t.is(empty?.data.length, 0)
  t.deepEqual(empty?.fds, [])
  t.is(empty?.truncated, false)
  const next = empty === null ? null : recvmsg(y)
  t.is(next?.data.toString(), 'x')
  closeAll([x])
  if (next !== null) t.is(recvmsg(y), null)
  closeAll([y])
})

// ---------------------------------------------------------------------------------------
// 10. A peer cannot block our event loop by clearing O_NONBLOCK.

leakFree('a peer that clears O_NONBLOCK on the shared socket cannot block our event loop (reading or writing)', async (t) => {
  // In a child: a blocking recvmsg/sendmsg would stop the event loop that runs the test.
  const f = await runToEnd(process.execPath, [fixture('trust-nonblock.js')], 20_000)
  t.false(f.timedOut, "the child's event loop was blocked (killed after 20 s)")
  t.is(f.code, 0, f.stderr)
  if (f.timedOut || f.code !== 0) return
  const r = report<{ clearedUnderUs: boolean; received: string[]; maxGap: number; gapAfterRead: number; sent: number; errors: string[] }>(f)
  t.true(r.clearedUnderUs, 'the peer did clear O_NONBLOCK on the shared description')
  t.deepEqual(r.received, ['one', 'two'])
  t.true(r.gapAfterRead < 500, `reading: the loop stalled for ${r.gapAfterRead} ms`)
  t.is(r.sent, 8 * MiB)
  t.true(r.maxGap < 500, `writing: the loop stalled for ${r.maxGap} ms`)
  t.deepEqual(r.errors, [])
})

// ---------------------------------------------------------------------------------------
// 11. Control messages other than SCM_RIGHTS.

/** Starts trust-shared-socket.py on `fd` (its descriptor 3) and waits for its answer. */
async function shareSocket(t: ExecutionContext, fd: number, action: string): Promise<{ said: string; done: () => Promise<void> }> {
  const child = spawnProcess('python3', [fixture('trust-shared-socket.py'), action], { stdio: ['pipe', 'pipe', 'inherit', fd] })
  t.teardown(() => child.kill('SIGKILL'))
  child.stdin!.on('error', () => {})
  const exited = once(child, 'close')
  const [said] = (await within(once(child.stdout!, 'data'), 5000, 'the python3 child said nothing')) as [Buffer]
  return {
    said: said.toString().trim(),
    done: async () => {
      child.stdin!.end('\n')
      await exited
    },
  }
}

leakFree('SO_PASSCRED set on the adopted socket: a frame with 253 descriptors still arrives with all 253 (no ERR_FDS_TRUNCATED)', async (t) => {
  const [x, y] = socketpair()
  const ch = Channel.fromFd(x)
  track(t, ch)
  const peer = await shareSocket(t, x, 'passcred')
  t.is(peer.said, 'ok 1')
  await peer.done()
  const seen: string[] = []
  ch.on('error', (e) => seen.push(`error:${e.code}`))
  const file = tempFile('passed 253 times')
  const arrived = within(once(ch, 'message'), 3000, 'the message never came') as Promise<[Message]>
  arrived.catch(() => {})
  sendmsg(y, frame('many', 253), Array.from({ length: 253 }, () => file.fd))
  const [m] = await arrived.catch(() => [null] as const)
  t.deepEqual(seen, [])
  t.is(m?.data.toString(), 'many')
  t.is(m?.fds.length, 253)
  t.true(m?.fds.every((fd) => identity(fd) === identity(file.fd)) ?? false, 'every descriptor is the file')
  if (m) closeAll(m.fds)
  ch.close()
  await closing(ch)
  closeAll([y, file.fd])
})

leakFree('SO_PASSPIDFD set on the adopted socket: 1000 messages leave no pidfd behind', async (t) => {
  const [x, y] = socketpair()
  const ch = Channel.fromFd(x)
  track(t, ch)
  const peer = await shareSocket(t, x, 'passpidfd')
  await peer.done()
  if (peer.said === 'ENOPROTOOPT') {
    t.log('this kernel has no SO_PASSPIDFD: not tested here')
    t.pass()
    ch.close()
    closeAll([y])
    return
  }
  t.is(peer.said, 'ok 1')
  const pidfdsBefore = linksContaining('pidfd')
  const errors: string[] = []
  ch.on('error', (e) => errors.push(e.code))
  let received = 0
  let withFds = 0
  let maxPidfds = 0
  const done = new Promise<void>((resolve) => {
    ch.on('message', (m) => {
      received++
      withFds += m.fds.length
      closeAll(m.fds)
      if (received % 100 === 0) maxPidfds = Math.max(maxPidfds, linksContaining('pidfd') - pidfdsBefore)
      if (received === 1000) resolve()
      else sendmsg(y, frame(`p${received}`)) // one at a time: one recvmsg each
    })
    ch.on('close', () => resolve())
  })
  sendmsg(y, frame('p0'))
  await within(done, 20_000, 'the messages did not all arrive')
  t.is(received, 1000)
  t.is(withFds, 0, 'no message carried a descriptor')
  t.is(maxPidfds, 0, 'no pidfd was left open along the way')
  t.deepEqual(errors, [])
  ch.close()
  await closing(ch)
  closeAll([y])
})

// ---------------------------------------------------------------------------------------
// 12. fromFd adopts AF_UNIX sockets only.

leakFree('Channel.fromFd() of a TCP socket throws a coded error and leaves the descriptor open and unchanged', async (t) => {
  const server = net.createServer((conn) => conn.on('error', () => {}))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  await once(client, 'connect')
  const clientFd = (client as unknown as { _handle: { fd: number } })._handle.fd
  // A duplicate of our own, so that net keeps its descriptor.
  const [p, q] = socketpair()
  sendmsg(p, 'x', [clientFd])
  const dup = recvmsg(q)!.fds[0]!
  closeAll([p, q])
  const flagsBefore = fdFlags(dup)
  let code: unknown = 'nothing thrown'
  try {
    const ch = Channel.fromFd(dup)
    ch.close() // adopted: it is gone with the channel
  } catch (e) {
    code = (e as SocketpairError).code
  }
  t.true(typeof code === 'string' && code !== 'nothing thrown', `threw ${String(code)} (expected a coded error, e.g. ERR_INVALID_ARG_VALUE)`)
  let stillOpen = true
  try {
    t.is(identity(dup), identity(clientFd), 'the descriptor is still open, on the same socket')
    t.is(fdFlags(dup), flagsBefore, 'and its flags are unchanged')
  } catch {
    stillOpen = false
  }
  t.true(stillOpen, 'the descriptor is still the caller’s')
  if (stillOpen) closeAll([dup])
  client.destroy()
  server.close()
  await once(server, 'close')
})

// ---------------------------------------------------------------------------------------
// 13. Misuse does not abort the process.

interface MisuseReport {
  codes: string[]
  uncoded: string[]
  second?: string
  firstReceived?: string[]
  peerGot?: string | null
  unrelatedIntact?: boolean
}

for (const mode of ['closed-under-listener', 'closed-then-listen'] as const) {
  leakFree(`closing a channel's descriptor behind its back (${mode}) does not abort the process: a coded error instead`, async (t) => {
    const f = await runToEnd(process.execPath, [fixture('trust-misuse.js'), mode], 20_000)
    t.is(f.signal, null, `the child died of ${f.signal}: ${f.stderr.trim().split('\n').pop()}`)
    t.is(f.code, 0, f.stderr)
    if (f.code !== 0) return
    const r = report<MisuseReport>(f)
    t.true(r.codes.length > 0, 'the channel or closeFds() reported a coded error')
    t.deepEqual(r.uncoded, [])
  })
}

leakFree('Channel.fromFd() twice on one descriptor: the second throws ERR_FD_IN_USE, the first works, and closing it cannot close an unrelated file', async (t) => {
  const f = await runToEnd(process.execPath, [fixture('trust-misuse.js'), 'adopt-twice'], 20_000)
  t.is(f.signal, null, `the child died of ${f.signal}`)
  t.is(f.code, 0, f.stderr)
  if (f.code !== 0) return
  const r = report<MisuseReport>(f)
  t.is(r.second, 'ERR_FD_IN_USE')
  t.deepEqual(r.firstReceived, ['to the first'])
  t.is(r.peerGot, 'from the first')
  t.true(r.unrelatedIntact, 'a file that reused the number survived the first channel’s close()')
  t.deepEqual(r.uncoded, [])
})

// ---------------------------------------------------------------------------------------
// 14. Leaks and lost context.

leakFree('100,000 Channel.pair() + close() cycles grow RSS by less than 20 MiB', async (t) => {
  t.timeout(120_000)
  const f = await runToEnd(process.execPath, ['--expose-gc', fixture('trust-pair-rss.js'), '100000', '60000'], 110_000)
  t.is(f.code, 0, f.stderr)
  if (f.code !== 0) return
  type Usage = { rss: number; heapUsed: number; fds: number }
  const r = report<{ before: Usage; after: Usage }>(f)
  const grown = r.after.rss - r.before.rss
  const heap = r.after.heapUsed - r.before.heapUsed
  t.true(
    grown < 20 * MiB,
    `RSS grew by ${(grown / MiB).toFixed(1)} MiB (${Math.round(grown / 100_000)} bytes per cycle; the JS heap by ${(heap / MiB).toFixed(1)} MiB)`,
  )
  t.is(r.after.fds, r.before.fds)
})

leakFree('AsyncLocalStorage: a listener attached inside als.run() sees the store, even after garbage collections', async (t) => {
  const f = await runToEnd(process.execPath, ['--expose-gc', fixture('trust-als.js')], 20_000)
  t.is(f.code, 0, f.stderr)
  if (f.code !== 0) return
  const r = report<{ data: string; store: unknown }>(f)
  t.is(r.data, 'hello')
  t.deepEqual(r.store, { id: 42 })
})

leakFree('spawn() with channel.maxMessageBytes: -1 throws ERR_OUT_OF_RANGE before any child starts, and leaks no descriptor', async (t) => {
  const dir = tempDir(t)
  const marker = path.join(dir, 'the child started')
  const script = `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`
  t.throws(() => spawn(process.execPath, ['-e', script], { stdio: 'ignore', channel: { maxMessageBytes: -1 } }), {
    code: 'ERR_OUT_OF_RANGE',
  })
  await sleep(1000) // time enough for a child that did start to write the marker
  t.false(fs.existsSync(marker), 'no child was started')
})

// ---------------------------------------------------------------------------------------
// 15. Following the README: passing a net.Server listening on a Unix path.

leakFree('README recipe: a server on a Unix path passed to two children, then closed by the parent: 50 connections are all answered by the children', async (t) => {
  const dir = tempDir(t)
  const socketPath = path.join(dir, 'server.sock')
  // README's recipe: Node unlinks the path a server listened on when it closes, so the
  // parent listens on a private name and gives clients a second name (a hard link to the
  // same socket), which no close() removes.
  const privatePath = `${socketPath}.${process.pid}`
  const server = net.createServer()
  server.listen(privatePath)
  await once(server, 'listening')
  fs.linkSync(privatePath, socketPath)
  const kids = [0, 1].map(() => {
    const s = spawn(process.execPath, [fixture('trust-server-child.js')], { stdio: ['ignore', 'inherit', 'inherit'] })
    track(t, s.channel)
    t.teardown(() => s.child.kill('SIGKILL'))
    s.channel.on('error', () => {})
    s.channel.on('message', () => {}) // keeps reading, to see the child's end
    return { ...s, exited: once(s.child, 'exit'), ready: once(s.channel, 'message') }
  })
  for (const k of kids) k.channel.send('take this server', { fds: [server] })
  server.close() // unlinks privatePath only
  await once(server, 'close')
  t.false(fs.existsSync(privatePath))
  t.true(fs.existsSync(socketPath))
  const readies = (await within(Promise.all(kids.map((k) => k.ready)), 10_000, 'a child never got ready')) as [Message][]
  t.deepEqual(
    readies.map(([m]) => m.data.toString()),
    ['ready', 'ready'],
  )
  const replies = await Promise.all(
    Array.from(
      { length: 50 },
      () =>
        new Promise<string>((resolve) => {
          const c = net.connect(socketPath)
          let reply = ''
          c.on('data', (d) => (reply += d))
          c.on('error', (e: NodeJS.ErrnoException) => resolve(`error:${e.code}`))
          c.on('close', () => resolve(reply))
        }),
    ),
  )
  const pids = new Set(kids.map((k) => `child ${k.child.pid}`))
  const outcomes: Record<string, number> = {}
  for (const r of replies) {
    const key = pids.has(r) ? 'answered by a child' : r
    outcomes[key] = (outcomes[key] ?? 0) + 1
  }
  t.deepEqual(outcomes, { 'answered by a child': 50 })
  for (const k of kids) k.channel.end()
  await within(Promise.all(kids.map((k) => k.exited)), 10_000, 'a child did not exit')
  await Promise.all(kids.map((k) => closing(k.channel)))
  fs.unlinkSync(socketPath) // the parent's to remove once everybody is done
})

leakFree('closing a net.Server that listened on a Unix path removes the path (why the recipe needs a second name)', async (t) => {
  const dir = tempDir(t)
  const socketPath = path.join(dir, 'plain.sock')
  const server = net.createServer()
  server.listen(socketPath)
  await once(server, 'listening')
  const [a, b] = Channel.pair()
  const got = once(b, 'message') as Promise<[Message]>
  a.send('server', { fds: [server] })
  const [m] = await got
  server.close()
  await once(server, 'close')
  t.false(fs.existsSync(socketPath), 'Node removed the path although a copy of the socket is open')
  closeFds(m.fds)
  await closeBoth(a, b)
})

// ---------------------------------------------------------------------------------------
// 16. Arguments.

/** Sends nothing: asserts that `b` receives nothing within 100 ms (closing whatever does arrive). */
async function nothingArrives(b: Channel): Promise<string[]> {
  const got: string[] = []
  const onMessage = (m: Message): void => {
    got.push(`${m.data}${m.fds.length ? ` with ${m.fds.length} descriptor(s)` : ''}`)
    closeAll(m.fds)
  }
  b.on('message', onMessage)
  await sleep(100)
  b.off('message', onMessage)
  return got
}

const NODE_ARG_CODES = ['ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE']

function codeOf(fn: () => unknown): string {
  try {
    fn()
    return 'nothing thrown'
  } catch (e) {
    return (e as SocketpairError).code ?? `uncoded: ${(e as Error).message}`
  }
}

leakFree('send(): a descriptor object whose fd is 1.5, NaN, 2**32 + 1 or -1 is refused with a coded error, and nothing is sent', async (t) => {
  const { a, b } = pair(t)
  for (const fd of [1.5, NaN, 2 ** 32 + 1, -1]) {
    const code = codeOf(() => a.send('x', { fds: [{ fd } as unknown as number] }))
    t.true(NODE_ARG_CODES.includes(code), `{ fd: ${fd} }: ${code}`)
  }
  t.deepEqual(await nothingArrives(b), [])
  await closeBoth(a, b)
})

leakFree('send(): a hole in fds is ERR_INVALID_ARG_TYPE, and nothing is sent', async (t) => {
  const { a, b } = pair(t)
  const file = tempFile('after the hole')
  const fds: number[] = new Array<number>(2)
  fds[1] = file.fd
  t.is(codeOf(() => a.send('x', { fds })), 'ERR_INVALID_ARG_TYPE')
  t.deepEqual(await nothingArrives(b), [])
  await closeBoth(a, b)
  closeAll([file.fd])
})

leakFree('send(): a detached Uint8Array is refused with a coded error, and nothing is sent', async (t) => {
  const { a, b } = pair(t)
  const u = new Uint8Array(8)
  structuredClone(u.buffer, { transfer: [u.buffer] })
  t.is(u.byteLength, 0, 'detached')
  const code = codeOf(() => a.send(u))
  t.true(code === 'ERR_INVALID_ARG_VALUE' || code === 'ERR_INVALID_STATE', code)
  t.deepEqual(await nothingArrives(b), [])
  await closeBoth(a, b)
})

/** An array whose element 0 is a getter: file A on the first read, file B after. */
function twoFacedFds(fileA: number, fileB: number): { fds: number[]; reads: () => number } {
  let reads = 0
  const fds: number[] = []
  Object.defineProperty(fds, 0, { get: () => (reads++ === 0 ? fileA : fileB), enumerable: true, configurable: true })
  return { fds, reads: () => reads }
}

leakFree('send(): each element of fds is read once, so the file that arrives is the one validated', async (t) => {
  const { a, b } = pair(t)
  const fileA = tempFile('A')
  const fileB = tempFile('B')
  const { fds, reads } = twoFacedFds(fileA.fd, fileB.fd)
  const arrived = within(once(b, 'message'), 2000, 'nothing arrived') as Promise<[Message]>
  a.send('which file?', { fds })
  const [m] = await arrived
  t.is(reads(), 1)
  t.deepEqual(m.fds.map(identity), [identity(fileA.fd)])
  closeAll(m.fds)
  await closeBoth(a, b)
  closeAll([fileA.fd, fileB.fd])
})

leakFree('sendmsg(): descriptors 1.5, NaN, 2**32 + 1, -1 and holes are refused with coded errors; a getter element is read once', (t) => {
  const [x, y] = socketpair()
  for (const fd of [1.5, NaN, 2 ** 32 + 1, -1]) {
    const code = codeOf(() => sendmsg(x, 'x', [fd]))
    t.true(NODE_ARG_CODES.includes(code), `[${fd}]: ${code}`)
  }
  const fileA = tempFile('A')
  const fileB = tempFile('B')
  const holey: number[] = new Array<number>(2)
  holey[1] = fileA.fd
  t.is(codeOf(() => sendmsg(x, 'x', holey)), 'ERR_INVALID_ARG_TYPE')
  const { fds, reads } = twoFacedFds(fileA.fd, fileB.fd)
  sendmsg(x, 'which file?', fds)
  const m = recvmsg(y, { maxBytes: 1024 })!
  t.is(m.data.toString(), 'which file?', 'nothing was sent before')
  t.is(reads(), 1)
  t.deepEqual(m.fds.map(identity), [identity(fileA.fd)])
  closeAll([...m.fds, x, y, fileA.fd, fileB.fd])
})

leakFree('options out of range: maxMessageBytes NaN or 2**32 and highWaterMark -1 are ERR_OUT_OF_RANGE', (t) => {
  const before = openFdCount()
  t.throws(() => Channel.pair({ maxMessageBytes: NaN }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => Channel.pair({ maxMessageBytes: 2 ** 32 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => Channel.pair({ highWaterMark: -1 }), { code: 'ERR_OUT_OF_RANGE' })
  t.is(openFdCount(), before)
})

// ---------------------------------------------------------------------------------------
// 17. Errors that say what happened.

leakFree('send() after the peer ended (and we auto-ended, writes still queued) throws ERR_CHANNEL_ENDED_BY_PEER', async (t) => {
  const { a, b } = pair(t)
  // b does not read: a's writes stay queued, so a is ended but not yet closed.
  let queued = 0
  while (a.bufferedBytes === 0 && queued < 1000) {
    a.send(Buffer.alloc(256 * 1024))
    queued++
  }
  t.true(a.bufferedBytes > 0, 'writes are queued')
  const ended = once(a, 'end')
  a.on('message', () => {})
  b.end()
  await within(ended, 2000, 'a never saw the end')
  await sleep(20) // the auto-end may come a turn later (so that replies to 'end' still go out)
  t.false(a.closed, 'a is ended, not closed')
  t.throws(() => a.send('x'), { code: 'ERR_CHANNEL_ENDED_BY_PEER' })
  await closeBoth(a, b)
})

leakFree('send() after our own end() throws ERR_STREAM_WRITE_AFTER_END', async (t) => {
  const { a, b } = pair(t)
  a.end()
  t.throws(() => a.send('x'), { code: 'ERR_STREAM_WRITE_AFTER_END' })
  await closeBoth(a, b)
})

leakFree("EPIPE from a peer process that exited carries errno -32 and syscall 'sendmsg'", async (t) => {
  const { child, channel } = spawn('python3', ['-c', 'pass'], { stdio: 'ignore' })
  track(t, channel)
  await once(child, 'close')
  const errors: SystemError[] = []
  channel.on('error', (e) => errors.push(e as SystemError))
  try {
    channel.send('anyone there?')
  } catch (e) {
    errors.push(e as SystemError)
  }
  await within(closing(channel), 2000, 'the channel did not close')
  t.is(errors.length, 1)
  t.is(errors[0]?.code, 'EPIPE')
  t.is(errors[0]?.errno, -os.constants.errno.EPIPE)
  t.is(errors[0]?.syscall, 'sendmsg')
})

leakFree("recvmsg() of a descriptor that is not open: code EBADF, errno -9, syscall 'recvmsg'", (t) => {
  const err = t.throws(() => recvmsg(999_999)) as SystemError
  t.is(err?.code, 'EBADF')
  t.is(err?.errno, -os.constants.errno.EBADF)
  t.is(err?.syscall, 'recvmsg')
})

// ---------------------------------------------------------------------------------------
// 7 (cont.). The send() callback on the queued path, in this process (no refused
// descriptor needed): it is called once per message, after the write.

leakFree('send(data, options, callback): the callback of a queued message is called once, without an error, after it was written', async (t) => {
  const { a, b } = pair(t)
  const calls: unknown[] = []
  const got: string[] = []
  b.on('message', (m) => got.push(m.data.toString()))
  a.send('first')
  sendWithCallback(a, 'second', {}, (err) => calls.push(err ?? null))
  t.deepEqual(calls, [], 'not called synchronously')
  await waitFor(() => got.length >= 2 && calls.length >= 1, 2000)
  await sleep(20)
  t.deepEqual(got, ['first', 'second'])
  t.deepEqual(calls, [null])
  await closeBoth(a, b)
})
