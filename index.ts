/**
 * socketpair — Unix socketpair(2) for Node.js, with file-descriptor passing
 * (SCM_RIGHTS), peer credentials and message framing.
 *
 * The low-level API is synchronous and thin over POSIX, for people porting C: numbers
 * are file descriptors, and the caller owns (and must close) every descriptor it gets.
 *
 * ```ts
 * import { socketpair, sendmsg, recvmsg } from 'socketpair'
 * import { closeSync, openSync } from 'node:fs'
 *
 * const [a, b] = socketpair()
 * sendmsg(a, 'here is a file', [openSync('/etc/hostname', 'r')])
 * const m = recvmsg(b)!            // { data: <Buffer ...>, fds: [7], truncated: false }
 * m.fds.forEach(closeSync)        // the receiver owns received descriptors
 * ```
 *
 * Errors are `Error` objects with a stable `code`: the errno name (`'EPIPE'`,
 * `'EMFILE'`, …) or one of {@link SocketpairErrorCode}.
 *
 * @packageDocumentation
 */

import * as childProcess from 'node:child_process'
import { EventEmitter } from 'node:events'
import * as fs from 'node:fs'
import * as net from 'node:net'

import type { NativeChannel } from './binding'
import { native } from './loader'

export { BINARY_ENV, loadError, platformPackage } from './loader'

/** The kind of socket pair. `'seqpacket'` exists on Linux and FreeBSD only. */
export type SocketType = 'stream' | 'seqpacket' | 'dgram'

/** Options of {@link socketpair}. */
export interface SocketpairOptions {
  /** Close-on-exec on both ends, so that child processes get only what they are given. Default `true`. */
  cloexec?: boolean
  /** Non-blocking on both ends: calls that would wait throw `EAGAIN` instead. Default `false`. */
  nonblock?: boolean
}

/** Options of {@link recvmsg}. */
export interface RecvmsgOptions {
  /** The most bytes to receive in this call (at least 1). Default 65536. */
  maxBytes?: number
  /** The most descriptors to accept; more is `ERR_FDS_TRUNCATED`. Default {@link MAX_FDS_PER_MESSAGE}. */
  maxFds?: number
}

/** What {@link recvmsg} received. */
export interface ReceivedMessage {
  /** The bytes received, in memory owned by JavaScript. */
  data: Buffer
  /** Descriptors received with the data, in the order they were sent. You own them: close them. */
  fds: number[]
  /** On `'seqpacket'` and `'dgram'` sockets: the record was longer than `maxBytes` and its rest is lost. */
  truncated: boolean
}

/** Who is on the other end, as the kernel recorded it when the socket was created. */
export interface Credentials {
  /** The peer's process id; `null` where the platform does not report it (FreeBSD). */
  pid: number | null
  uid: number
  gid: number
}

/**
 * The `code` of errors this package raises itself. Errors from the operating system
 * carry the errno name instead (`'EPIPE'`, `'EBADF'`, `'EAGAIN'`, `'EMFILE'`, …).
 */
export type SocketpairErrorCode =
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_MESSAGE_TOO_LARGE'
  | 'ERR_TOO_MANY_FDS'
  | 'ERR_FDS_TRUNCATED'
  | 'ERR_PROTOCOL'
  | 'ERR_CHANNEL_CLOSED'
  | 'ERR_STREAM_WRITE_AFTER_END'
  | 'ERR_NO_PARENT_CHANNEL'
  | 'ERR_UNSUPPORTED_PLATFORM'
  | 'ERR_BINARY_MISSING'
  | 'ERR_BINARY_MISMATCH'

/** An error from this package: always has a `code`. */
export interface SocketpairError extends Error {
  code: SocketpairErrorCode | (string & {})
}

/** The most descriptors one message can carry (Linux's SCM_MAX_FD, 253, on every platform). */
export const MAX_FDS_PER_MESSAGE: number = 253

const DEFAULT_MAX_BYTES = 64 * 1024
/** Receives up to this size go through one reused buffer and are copied out at their exact size. */
const SCRATCH_LIMIT = 1024 * 1024
let scratch: Buffer | null = null

/**
 * Creates a connected pair of Unix sockets: `[fd0, fd1]`. Both are close-on-exec unless
 * `options.cloexec` is `false`.
 *
 * ```ts
 * const [parentEnd, childEnd] = socketpair('stream')
 * ```
 */
export function socketpair(type: SocketType = 'stream', options: SocketpairOptions = {}): [number, number] {
  if (type !== 'stream' && type !== 'seqpacket' && type !== 'dgram') {
    throw codedError(
      TypeError,
      'ERR_INVALID_ARG_VALUE',
      `type must be 'stream', 'seqpacket' or 'dgram', got ${describe(type)}`,
    )
  }
  checkObject(options, 'options')
  const cloexec = optionalBoolean(options.cloexec, 'options.cloexec', true)
  const nonblock = optionalBoolean(options.nonblock, 'options.nonblock', false)
  const [a, b] = native().socketpair(type, cloexec, nonblock)
  return [a, b]
}

/**
 * Sends `data` on socket `fd`, with the descriptors `fds` attached to its first byte.
 * Returns the number of bytes sent: on a stream socket this can be fewer than
 * `data.length` (send the rest *without* the descriptors, which have gone).
 *
 * The sender keeps its own descriptors: the receiver gets new ones for the same files.
 * Descriptors need at least one byte to ride on; a closed peer is an `EPIPE` error.
 *
 * ```ts
 * sendmsg(fd, 'log file', [fs.openSync('app.log', 'a')])
 * ```
 */
export function sendmsg(fd: number, data: Uint8Array | string, fds: readonly number[] = []): number {
  checkFd(fd, 'fd')
  const bytes = toBuffer(data)
  if (!Array.isArray(fds)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `fds must be an array of descriptors, got ${describe(fds)}`)
  }
  fds.forEach((f, i) => checkFd(f, `fds[${i}]`))
  return native().sendmsg(fd, bytes, fds.slice())
}

/**
 * Receives from socket `fd`: the data and any descriptors that came with it, or `null`
 * when the peer has closed (end of stream; never on `'dgram'` sockets).
 *
 * Blocks unless the socket is non-blocking, in which case "nothing yet" is an `EAGAIN`
 * error. More descriptors than `maxFds` (or a receiver at its descriptor limit) is
 * `ERR_FDS_TRUNCATED`: the ones that arrived are closed and the data is discarded.
 *
 * ```ts
 * const m = recvmsg(fd, { maxBytes: 4096 })
 * if (m) for (const received of m.fds) fs.closeSync(received)
 * ```
 */
export function recvmsg(fd: number, options: RecvmsgOptions = {}): ReceivedMessage | null {
  checkFd(fd, 'fd')
  checkObject(options, 'options')
  const maxBytes = optionalInteger(options.maxBytes, 'options.maxBytes', DEFAULT_MAX_BYTES, 1, 2 ** 31 - 1)
  const maxFds = optionalInteger(options.maxFds, 'options.maxFds', MAX_FDS_PER_MESSAGE, 0, MAX_FDS_PER_MESSAGE)

  let target: Buffer
  const small = maxBytes <= SCRATCH_LIMIT
  if (small) {
    if (scratch === null || scratch.length < maxBytes) {
      scratch = Buffer.allocUnsafeSlow(Math.max(maxBytes, DEFAULT_MAX_BYTES))
    }
    target = scratch.subarray(0, maxBytes)
  } else {
    target = Buffer.allocUnsafe(maxBytes)
  }
  const r = native().recvmsg(fd, target, maxFds)
  if (r.eof) return null
  // Copy small reads out of the shared scratch buffer at their exact size; large reads
  // keep the buffer they were received into.
  const data = small ? Buffer.from(target.subarray(0, r.bytes)) : target.subarray(0, r.bytes)
  return { data, fds: r.fds, truncated: r.truncated }
}

/**
 * The credentials of the process on the other end of socket `fd`, as recorded when the
 * socket was created — for a socketpair, the process that called socketpair(2), even if
 * it has since passed that end to another process.
 *
 * ```ts
 * const { pid, uid } = peerCredentials(fd)
 * ```
 */
export function peerCredentials(fd: number): Credentials {
  checkFd(fd, 'fd')
  const c = native().peerCredentials(fd)
  return { pid: c.pid ?? null, uid: c.uid, gid: c.gid }
}

/**
 * Closes descriptors — typically the `fds` of a received message. Every one is closed;
 * the first failure (`EBADF` for one that was not open) is thrown afterwards. Unlike
 * `fs.closeSync`, it does not make a worker thread warn about descriptors it did not
 * open itself.
 *
 * ```ts
 * channel.on('message', (m) => { use(m.fds); closeFds(m.fds) })
 * ```
 */
export function closeFds(fds: Iterable<number>): void {
  const list = Array.from(fds)
  list.forEach((fd, i) => checkFd(fd, `fds[${i}]`))
  native().closeFds(list)
}

// ---------------------------------------------------------------------------------------
// Channel: framed messages with descriptors, on Node's event loop.

/** The environment variable through which {@link spawn} tells a child its descriptor. */
export const CHANNEL_FD_ENV = 'SOCKETPAIR_FD'

/** The default {@link ChannelOptions.maxMessageBytes}: 64 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

/** Options of {@link Channel} constructors and {@link spawn}. */
export interface ChannelOptions {
  /**
   * The largest payload accepted from the peer, and sent to it (default 64 MiB, at most
   * 4 GiB − 1). A larger incoming frame is `ERR_PROTOCOL` and closes the channel; a larger
   * `send()` throws `ERR_MESSAGE_TOO_LARGE`. On `'seqpacket'`/`'dgram'` channels the
   * socket buffer is the real limit (about 208 KiB by default on Linux).
   */
  maxMessageBytes?: number
  /** Once the peer has ended its side, end ours too (default) — or keep it open (`true`). */
  allowHalfOpen?: boolean
  /** Bytes queued at which `send()` starts returning `false` (default 1 MiB). */
  highWaterMark?: number
}

/** Options of {@link Channel.pair}. */
export interface PairOptions extends ChannelOptions {
  /** `'stream'` (default), `'seqpacket'` (Linux, FreeBSD) or `'dgram'`. */
  type?: SocketType
}

/** A received message. The receiver owns `fds` and must close them (`fs.closeSync`). */
export interface Message {
  data: Buffer
  /** Descriptors sent with the message, in order. Close-on-exec. */
  fds: number[]
}

/**
 * Anything whose descriptor can be passed: a number, an `fs.promises.FileHandle`, a
 * connected `net.Socket`, a listening `net.Server`, or a `Channel`. Passing never
 * transfers ownership: the sender's object stays open (close it when you are done), and
 * the receiver gets a new descriptor for the same open file or socket.
 */
export type Passable = number | fs.promises.FileHandle | net.Socket | net.Server | Channel

/** Options of {@link Channel.send}. */
export interface SendOptions {
  /** Descriptors to pass with the message: up to {@link MAX_FDS_PER_MESSAGE}. */
  fds?: readonly Passable[]
}

const EVENT_MESSAGES = 1
const EVENT_DRAIN = 2
const EVENT_END = 3
const EVENT_ERROR = 4
const EVENT_FINISH = 5

/** Errors from a send that mean the connection itself is gone: reported as events. */
const FATAL_SEND_CODES = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ECONNREFUSED', 'ESHUTDOWN'])

/**
 * Descriptors queued (as duplicates) at which `send()` returns false, whatever the
 * byte count: a queue of small messages with many descriptors must not run the process
 * out of descriptors.
 */
const FDS_HIGH_WATER = 1024

/** Messages an async iterator buffers before it pauses reading. */
const ITERATOR_HIGH_WATER = 1024

export interface Channel {
  on(event: 'message', listener: (message: Message) => void): this
  on(event: 'drain' | 'end' | 'close', listener: () => void): this
  on(event: 'error', listener: (err: SocketpairError) => void): this
  once(event: 'message', listener: (message: Message) => void): this
  once(event: 'drain' | 'end' | 'close', listener: () => void): this
  once(event: 'error', listener: (err: SocketpairError) => void): this
  off(event: 'message', listener: (message: Message) => void): this
  off(event: 'drain' | 'end' | 'close', listener: () => void): this
  off(event: 'error', listener: (err: SocketpairError) => void): this
}

/**
 * One end of a socketpair carrying framed messages with descriptors, on Node's event
 * loop. Shaped like `net.Socket`: `send()` returns `false` under backpressure and
 * `'drain'` follows; `end()` half-closes; `close()` closes now; `ref()`/`unref()`.
 *
 * ```ts
 * const [a, b] = Channel.pair()
 * b.on('message', ({ data, fds }) => { console.log(data.toString(), fds); fds.forEach(fs.closeSync) })
 * a.send('hello', { fds: [fs.openSync('/etc/hostname', 'r')] })
 * ```
 *
 * Events: `'message'` ({@link Message}), `'drain'`, `'end'` (the peer finished
 * sending), `'close'` (always last), `'error'` (with a `code`; `'close'` follows).
 *
 * Like a Node stream, a channel starts reading when the first `'message'` listener is
 * added (or a `for await` loop starts): until then incoming messages wait in the kernel
 * and the peer feels backpressure. From then on it keeps reading; a message that
 * arrives while no `'message'` listener is attached is dropped, its descriptors closed.
 */
export class Channel extends EventEmitter implements AsyncIterable<Message> {
  /** The socket's descriptor (owned by the channel; -1 once closed). */
  readonly fd: number
  #native: NativeChannel | null
  #type: SocketType
  #allowHalfOpen: boolean
  #highWaterMark: number
  #flushScheduled = false
  #needDrain = false
  #ending = false
  #readEnded = false
  #finished = false
  #closed = false
  #iteratorsPaused = 0
  #flowing = false

  /** Adopts `fd`, a connected Unix socket; use {@link Channel.pair}, {@link Channel.fromFd} or {@link Channel.fromParent}. */
  private constructor(fd: number, options: ChannelOptions) {
    super()
    this.#allowHalfOpen = optionalBoolean(options.allowHalfOpen, 'options.allowHalfOpen', false)
    this.#highWaterMark = optionalInteger(options.highWaterMark, 'options.highWaterMark', 1024 * 1024, 0, 2 ** 53)
    const max = optionalInteger(options.maxMessageBytes, 'options.maxMessageBytes', DEFAULT_MAX_MESSAGE_BYTES, 0, 2 ** 32 - 1)
    this.#native = new (native().NativeChannel)(fd, max, (kind: number, a?: unknown, b?: unknown, c?: unknown) =>
      this.#onEvent(kind, a, b, c),
    )
    this.fd = fd
    this.#type = this.#native.kind as SocketType
    super.on('newListener', (event: string | symbol) => {
      if (event === 'message' && !this.#flowing) {
        this.#flowing = true
        this.#updateReading()
      }
    })
  }

  /**
   * A connected pair of channels in this process (hand one end's {@link fd} to a child
   * with `spawn(..., { stdio })`, or use both ends here).
   *
   * ```ts
   * const [left, right] = Channel.pair({ type: 'seqpacket' })
   * ```
   */
  static pair(options: PairOptions = {}): [Channel, Channel] {
    checkObject(options, 'options')
    const [a, b] = socketpair(options.type ?? 'stream')
    let left: Channel
    try {
      left = new Channel(a, options)
    } catch (err) {
      fs.closeSync(a)
      fs.closeSync(b)
      throw err
    }
    try {
      return [left, new Channel(b, options)]
    } catch (err) {
      left.close()
      fs.closeSync(b)
      throw err
    }
  }

  /**
   * Adopts an open, connected Unix socket descriptor — inherited from a parent, or
   * received in a message. The channel owns it from now on (it makes it non-blocking
   * and close-on-exec, and closes it on `close()`); do not use the number elsewhere.
   * If this throws (`ENOTSOCK`, `EBADF`, …), nothing was closed: the descriptor is still
   * yours.
   *
   * ```ts
   * const ch = Channel.fromFd(3)
   * ```
   */
  static fromFd(fd: number, options: ChannelOptions = {}): Channel {
    checkFd(fd, 'fd')
    checkObject(options, 'options')
    return new Channel(fd, options)
  }

  /**
   * In a child started by {@link spawn}: the channel to the parent. Reads the
   * descriptor number from `process.env.SOCKETPAIR_FD` (and removes it, so that the
   * child's own children do not see it).
   *
   * ```ts
   * const parent = Channel.fromParent()
   * parent.on('message', (m) => parent.send(`echo: ${m.data}`))
   * ```
   */
  static fromParent(options: ChannelOptions = {}): Channel {
    const value = process.env[CHANNEL_FD_ENV]
    if (value === undefined) {
      throw codedError(
        Error,
        'ERR_NO_PARENT_CHANNEL',
        `this process was not started by socketpair's spawn(): ${CHANNEL_FD_ENV} is not set in its environment`,
      )
    }
    const fd = Number(value)
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(fd)) {
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `${CHANNEL_FD_ENV} must be a descriptor number, got ${JSON.stringify(value)}`)
    }
    const channel = Channel.fromFd(fd, options)
    delete process.env[CHANNEL_FD_ENV]
    return channel
  }

  /** `'stream'`, `'seqpacket'` or `'dgram'`. */
  get type(): SocketType {
    return this.#type
  }

  /** True once `close()` ran or the channel failed. */
  get closed(): boolean {
    return this.#closed
  }

  /** Bytes queued by `send()` and not yet written. */
  get bufferedBytes(): number {
    return this.#native?.queuedBytes ?? 0
  }

  /**
   * Sends one message, with descriptors. Returns `false` when the queue has reached
   * `highWaterMark` bytes or holds 1024 descriptors: wait for `'drain'` before sending
   * more. Messages arrive whole, in
   * order, each with exactly its descriptors.
   *
   * The caller keeps its descriptors and may close them as soon as `send()` returns (a
   * queued message holds duplicates); likewise it may reuse `data`'s memory at once (a
   * queued message holds a copy; unlike `net.Socket#write`, nothing keeps a reference).
   * Oversized messages, too many descriptors, bad arguments and sending after
   * `end()`/`close()` throw; a broken connection (`EPIPE`) is an `'error'` event, then
   * `'close'`.
   *
   * ```ts
   * if (!channel.send(chunk)) await once(channel, 'drain')
   * channel.send('a socket for you', { fds: [socket] })
   * ```
   */
  send(data: Uint8Array | string, options: SendOptions = {}): boolean {
    const nat = this.#native
    if (nat === null || this.#closed) {
      throw codedError(Error, 'ERR_CHANNEL_CLOSED', 'cannot send: the channel is closed')
    }
    const bytes = toBuffer(data)
    checkObject(options, 'options')
    const fds = resolvePassables(options.fds)
    let queued: number
    try {
      queued = nat.send(bytes, fds)
    } catch (err) {
      const code = (err as SocketpairError).code
      if (!FATAL_SEND_CODES.has(code)) throw err
      this.#destroy(err as SocketpairError)
      return false
    }
    if (queued > 0) this.#scheduleFlush()
    const overWater = queued >= this.#highWaterMark || (fds.length > 0 && nat.queuedFds >= FDS_HIGH_WATER)
    if (overWater && queued > 0) {
      this.#needDrain = true
      return false
    }
    return true
  }

  /**
   * Half-close: the messages already sent are delivered, then the peer sees `'end'`.
   * This side can still receive until the peer ends too; then `'close'` follows.
   */
  end(): void {
    const nat = this.#native
    if (nat === null || this.#ending) return
    this.#ending = true
    try {
      nat.end()
    } catch (err) {
      this.#destroy(err as SocketpairError)
      return
    }
    this.#checkFinished()
  }

  /**
   * Closes now. Messages already sent are written if the socket takes them at once (use
   * `end()` to be sure everything is delivered); whatever is still queued is dropped,
   * every descriptor the channel holds is closed, nothing more is received. `'close'`
   * follows.
   */
  close(): void {
    if (this.#closed) return
    // What send() queued this turn goes if the socket takes it at once; the rest is dropped.
    try {
      this.#native?.flush()
    } catch {
      // closing anyway
    }
    if (this.#release()) process.nextTick(() => this.emit('close'))
  }

  /** Closes the native side once; false if it was closed already. */
  #release(): boolean {
    if (this.#closed) return false
    this.#closed = true
    const nat = this.#native
    this.#native = null
    nat?.close()
    ;(this as { fd: number }).fd = -1
    return true
  }

  /** Keeps the event loop alive while the channel is open (the default). */
  ref(): this {
    this.#native?.ref()
    return this
  }

  /** Lets the process exit even though the channel is open. */
  unref(): this {
    this.#native?.unref()
    return this
  }

  /** Who created the other end (see {@link peerCredentials}). */
  peerCredentials(): Credentials {
    const nat = this.#native
    if (nat === null) throw codedError(Error, 'ERR_CHANNEL_CLOSED', 'the channel is closed')
    const c = nat.peerCredentials()
    return { pid: c.pid ?? null, uid: c.uid, gid: c.gid }
  }

  /**
   * `for await (const message of channel)`: every message until the peer ends or the
   * channel closes; an error is thrown from the loop. Reading pauses while more than
   * 1024 messages wait to be consumed. Leaving the loop early (`break`) stops listening;
   * messages already received but not yet yielded are dropped and their descriptors
   * closed. The channel itself stays open.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    const queue: Message[] = []
    let waiting: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void } | null = null
    let failure: unknown = null
    let done = false
    let paused = false
    const setPaused = (on: boolean): void => {
      if (paused === on) return
      paused = on
      this.#iteratorsPaused += on ? 1 : -1
      this.#updateReading()
    }
    const finish = (): void => {
      if (done) return
      done = true
      this.off('message', onMessage)
      this.off('end', onEnd)
      this.off('close', onEnd)
      this.off('error', onError)
      setPaused(false)
    }
    const onMessage = (m: Message): void => {
      if (waiting) {
        const w = waiting
        waiting = null
        w.resolve({ value: m, done: false })
      } else {
        queue.push(m)
        if (queue.length >= ITERATOR_HIGH_WATER) setPaused(true)
      }
    }
    const onEnd = (): void => {
      finish()
      if (waiting) {
        const w = waiting
        waiting = null
        w.resolve({ value: undefined, done: true })
      }
    }
    const onError = (err: unknown): void => {
      failure = err
      finish()
      if (waiting) {
        const w = waiting
        waiting = null
        failure = null
        w.reject(err)
      }
    }
    this.on('message', onMessage)
    this.on('end', onEnd)
    this.on('close', onEnd)
    this.on('error', onError)
    const iterator: AsyncIterableIterator<Message> = {
      next: (): Promise<IteratorResult<Message>> => {
        const m = queue.shift()
        if (m !== undefined) {
          if (queue.length < ITERATOR_HIGH_WATER / 2) setPaused(false)
          return Promise.resolve({ value: m, done: false })
        }
        if (failure !== null) {
          const err = failure
          failure = null
          return Promise.reject(err)
        }
        if (done) return Promise.resolve({ value: undefined, done: true })
        return new Promise((resolve, reject) => (waiting = { resolve, reject }))
      },
      return: (): Promise<IteratorResult<Message>> => {
        finish()
        for (const m of queue.splice(0)) closeQuietly(m.fds)
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }

  #updateReading(): void {
    this.#native?.setReading(this.#flowing && this.#iteratorsPaused === 0)
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    queueMicrotask(() => this.#flush())
  }

  /** Writes what `send()` queued during this turn, in as few system calls as it can. */
  #flush(): void {
    this.#flushScheduled = false
    const nat = this.#native
    if (nat === null) return
    let left: number
    try {
      left = nat.flush()
    } catch (err) {
      this.#destroy(err as SocketpairError)
      return
    }
    if (left === 0) this.#drained()
    this.#checkFinished()
  }

  #drained(): void {
    if (this.#needDrain) {
      this.#needDrain = false
      this.emit('drain')
    }
  }

  #checkFinished(): void {
    if (this.#ending && !this.#finished && this.#native?.finished) {
      this.#finished = true
      this.#maybeClose()
    }
  }

  #maybeClose(): void {
    if (this.#readEnded && this.#finished) this.close()
  }

  /** Closes because of `err`: 'error', then 'close', as net.Socket does. */
  #destroy(err: SocketpairError): void {
    if (!this.#release()) return
    process.nextTick(() => {
      this.emit('error', err)
      this.emit('close')
    })
  }

  #onEvent(kind: number, a: unknown, b: unknown, c: unknown): void {
    switch (kind) {
      case EVENT_MESSAGES:
        if (b === null) this.#deliverOne(a as Buffer)
        else this.#deliver(a as Buffer, b as Buffer, c as number)
        break
      case EVENT_DRAIN:
        this.#drained()
        break
      case EVENT_END:
        this.#readEnded = true
        this.emit('end')
        if (!this.#allowHalfOpen) this.end()
        this.#maybeClose()
        break
      case EVENT_ERROR: {
        const err = new Error(String(b)) as SocketpairError
        err.code = String(a)
        this.#destroy(err)
        break
      }
      case EVENT_FINISH:
        this.#checkFinished()
        break
    }
  }

  /** Emits a batch of one message without descriptors. */
  #deliverOne(data: Buffer): void {
    if (this.#closed || this.listenerCount('message') === 0) return
    this.emit('message', { data, fds: [] })
  }

  /** Emits a native batch: payloads back to back in `data`, and the Uint32 `table`. */
  #deliver(data: Buffer, table: Buffer, count: number): void {
    const words = new Uint32Array(table.buffer, table.byteOffset, table.byteLength / 4)
    let offset = 0
    let fdAt = 2 * count
    for (let i = 0; i < count; i++) {
      const length = words[2 * i]!
      const nfds = words[2 * i + 1]!
      const fds = Array.from(words.subarray(fdAt, fdAt + nfds))
      fdAt += nfds
      const message: Message = { data: data.subarray(offset, offset + length), fds }
      offset += length
      if (this.#closed || this.listenerCount('message') === 0) {
        closeQuietly(fds) // closed by an earlier listener, or nobody listens: nobody will own these
        continue
      }
      this.emit('message', message)
    }
  }
}

/**
 * Starts `command` with a dedicated channel: one fresh socketpair per child, the child's
 * end at descriptor `stdio.length` (3 unless you pass more stdio entries), named in the
 * child's environment as `SOCKETPAIR_FD`. The parent's copy of the child's end is closed
 * at once, and the parent's end is close-on-exec, so no other child ever inherits it.
 *
 * A Node child calls {@link Channel.fromParent}; any other child finds the descriptor
 * number in `SOCKETPAIR_FD` and speaks PROTOCOL.md.
 *
 * ```ts
 * const { child, channel } = spawn(process.execPath, ['worker.js'])
 * channel.on('message', (m) => console.log(`${child.pid} says ${m.data}`))
 * channel.send('work')
 * ```
 */
export function spawn(
  command: string,
  args: readonly string[] = [],
  options: SpawnOptions = {},
): { child: childProcess.ChildProcess; channel: Channel } {
  if (typeof command !== 'string') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `command must be a string, got ${describe(command)}`)
  }
  if (!Array.isArray(args)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `args must be an array of strings, got ${describe(args)}`)
  }
  checkObject(options, 'options')
  const { channel: channelOptions = {}, type = 'stream', ...spawnOptions } = options
  const stdio = normalizeStdio(spawnOptions.stdio)
  const [mine, theirs] = socketpair(type)
  const index = stdio.length
  stdio.push(theirs)
  const env = { ...(spawnOptions.env ?? process.env), [CHANNEL_FD_ENV]: String(index) }
  let child: childProcess.ChildProcess
  try {
    child = childProcess.spawn(command, args, { ...spawnOptions, stdio, env })
  } catch (err) {
    fs.closeSync(mine)
    throw err
  } finally {
    fs.closeSync(theirs) // the child has its copy (or failed to start)
  }
  return { child, channel: Channel.fromFd(mine, channelOptions) }
}

/** Options of {@link spawn}: Node's spawn options, plus the channel's. */
export interface SpawnOptions extends childProcess.SpawnOptions {
  /** Options of the parent's channel. */
  channel?: ChannelOptions
  /** The socket type of the pair (default `'stream'`). */
  type?: SocketType
}

function normalizeStdio(stdio: childProcess.SpawnOptions['stdio']): childProcess.StdioOptions & unknown[] {
  if (stdio === undefined) return ['pipe', 'pipe', 'pipe']
  if (typeof stdio === 'string') return [stdio, stdio, stdio]
  if (Array.isArray(stdio)) {
    const copy: unknown[] = [...stdio]
    while (copy.length < 3) copy.push(undefined)
    return copy as childProcess.StdioOptions & unknown[]
  }
  throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `options.stdio must be a string or an array, got ${describe(stdio)}`)
}

interface HasHandle {
  _handle?: { fd?: number } | null
}

/** The descriptor numbers behind what a caller wants to pass. */
function resolvePassables(fds: readonly Passable[] | undefined): number[] {
  if (fds === undefined) return []
  if (!Array.isArray(fds)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `options.fds must be an array, got ${describe(fds)}`)
  }
  return fds.map((item: unknown, i) => {
    const name = `options.fds[${i}]`
    if (typeof item === 'number') {
      checkFd(item, name)
      return item
    }
    if (item instanceof Channel) {
      if (item.fd < 0) throw codedError(Error, 'ERR_CHANNEL_CLOSED', `${name} is a closed Channel`)
      return item.fd
    }
    if (item instanceof net.Socket || item instanceof net.Server) {
      const fd = (item as unknown as HasHandle)._handle?.fd
      if (typeof fd !== 'number' || fd < 0) {
        throw codedError(
          TypeError,
          'ERR_INVALID_ARG_VALUE',
          `${name} has no descriptor: pass a connected net.Socket or a listening net.Server`,
        )
      }
      return fd
    }
    if (item !== null && typeof item === 'object' && typeof (item as { fd?: unknown }).fd === 'number') {
      const fd = (item as { fd: number }).fd // fs.promises.FileHandle
      if (fd < 0) throw codedError(Error, 'ERR_INVALID_ARG_VALUE', `${name} is a closed FileHandle`)
      return fd
    }
    throw codedError(
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      `${name} must be a descriptor number, FileHandle, net.Socket, net.Server or Channel, got ${describe(item)}`,
    )
  })
}

function closeQuietly(fds: readonly number[]): void {
  try {
    native().closeFds(fds.slice())
  } catch {
    // already closed by its owner
  }
}

// ---------------------------------------------------------------------------------------
// Argument checks: Node's own codes, and messages that say what was passed.

type ErrorConstructorLike = new (message: string) => Error

function codedError(Ctor: ErrorConstructorLike, code: SocketpairErrorCode, message: string): SocketpairError {
  const err = new Ctor(message) as SocketpairError
  err.code = code
  return err
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `${typeof value} ${String(value)}`
}

function checkFd(fd: unknown, name: string): asserts fd is number {
  if (typeof fd !== 'number') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be a file descriptor (a number), got ${describe(fd)}`)
  }
  if (!Number.isInteger(fd) || fd < 0 || fd > 2 ** 31 - 1) {
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `${name} must be an integer from 0 to 2147483647, got ${fd}`)
  }
}

function checkObject(value: unknown, name: string): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be an object, got ${describe(value)}`)
  }
}

function optionalBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be a boolean, got ${describe(value)}`)
  }
  return value
}

function optionalInteger(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be a number, got ${describe(value)}`)
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `${name} must be an integer from ${min} to ${max}, got ${value}`)
  }
  return value
}

function toBuffer(data: unknown): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8')
  if (Buffer.isBuffer(data)) return data
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `data must be a string, Buffer or Uint8Array, got ${describe(data)}`)
}
