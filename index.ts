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

/** The addon's channel-state bits (defined once, in Rust), read when the first channel opens. */
let STATE_READ_ENDED = 0
let STATE_WRITE_ENDING = 0
let STATE_WRITE_ENDED = 0
function loadStateBits(): void {
  if (STATE_WRITE_ENDING !== 0) return
  const n = native()
  STATE_READ_ENDED = n.STATE_READ_ENDED
  STATE_WRITE_ENDING = n.STATE_WRITE_ENDING
  STATE_WRITE_ENDED = n.STATE_WRITE_ENDED
}

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
  | 'ERR_CHANNEL_ENDED_BY_PEER'
  | 'ERR_STREAM_WRITE_AFTER_END'
  | 'ERR_FD_IN_USE'
  | 'ERR_INVALID_STATE'
  | 'ERR_NO_PARENT_CHANNEL'
  | 'ERR_UNSUPPORTED_PLATFORM'
  | 'ERR_BINARY_MISSING'
  | 'ERR_BINARY_MISMATCH'

/** An error from this package: always has a `code`. */
export interface SocketpairError extends Error {
  code: SocketpairErrorCode | (string & {})
  /** For errors from the operating system: the negated errno, as Node reports it (`-32` for `EPIPE`). */
  errno?: number
  /** For errors from the operating system: the system call that failed (`'sendmsg'`). */
  syscall?: string
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
  checkSocketType(type, 'type')
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
  return native().sendmsg(fd, bytes, descriptorList(fds, 'fds'))
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
  if (fds === null || typeof fds !== 'object' || typeof (fds as Iterable<number>)[Symbol.iterator] !== 'function') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `fds must be an iterable of descriptors, got ${describe(fds)}`)
  }
  const list = Array.from(fds)
  list.forEach((fd, i) => checkFd(fd, `fds[${i}]`))
  native().closeFds(list)
}

/** A checked copy of an array of descriptor numbers: each element read once, holes refused. */
function descriptorList(fds: unknown, name: string): number[] {
  if (!Array.isArray(fds)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be an array of descriptors, got ${describe(fds)}`)
  }
  const length = fds.length
  const out: number[] = new Array<number>(length)
  for (let i = 0; i < length; i++) {
    if (!(i in fds)) throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name}[${i}] is missing (a hole in the array)`)
    const fd: unknown = fds[i]
    checkFd(fd, `${name}[${i}]`)
    out[i] = fd
  }
  return out
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
  /**
   * Once the peer has ended its side, end ours too (default `false`: on the turn after
   * `'end'`, so a reply sent right after a `for await` loop still goes out) — or keep it
   * open until `end()` (`true`).
   */
  allowHalfOpen?: boolean
  /** Bytes queued at which `send()` starts returning `false` (default 1 MiB). */
  highWaterMark?: number
  /**
   * Bytes an async iterator ({@link Channel.iterator}) buffers before reading pauses
   * (default 1 MiB; one message is always taken, however large).
   */
  readableHighWaterMark?: number
}

/** Options of {@link Channel.pair}. */
export interface PairOptions extends ChannelOptions {
  /** `'stream'` (default), `'seqpacket'` (Linux, FreeBSD) or `'dgram'`. */
  type?: SocketType
}

/** Options of {@link Channel.iterator}. */
export interface IteratorOptions {
  /** Bytes of received messages buffered before reading pauses (default: the channel's `readableHighWaterMark`). */
  highWaterMark?: number
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

/**
 * Called once a message has been handed to the kernel whole (`err` undefined), or with
 * the error that stopped it: the kernel refused it (`EINVAL`: a descriptor it will not
 * pass), or the channel closed first (`ERR_CHANNEL_CLOSED`).
 */
export type SendCallback = (err?: SocketpairError) => void

/** Errors from a send that mean the connection itself is gone: reported as events. */
const FATAL_SEND_CODES = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ECONNREFUSED', 'ESHUTDOWN', 'EBADF'])

/**
 * Descriptors queued (as duplicates) at which `send()` returns false, whatever the
 * byte count: a queue of small messages with many descriptors must not run the process
 * out of descriptors.
 */
const FDS_HIGH_WATER = 1024

/** The validated, defaulted {@link ChannelOptions}. */
interface ChannelSettings {
  maxMessageBytes: number
  allowHalfOpen: boolean
  highWaterMark: number
  readableHighWaterMark: number
}

/** Checks every field of `options` (before anything is created), with Node's codes. */
function channelSettings(options: unknown, name = 'options'): ChannelSettings {
  return withCodes(name, () => readChannelSettings(options, name))
}

function readChannelSettings(options: unknown, name: string): ChannelSettings {
  checkObject(options, name)
  const o = options as ChannelOptions
  return {
    maxMessageBytes: optionalInteger(o.maxMessageBytes, `${name}.maxMessageBytes`, DEFAULT_MAX_MESSAGE_BYTES, 0, 2 ** 32 - 1),
    allowHalfOpen: optionalBoolean(o.allowHalfOpen, `${name}.allowHalfOpen`, false),
    highWaterMark: optionalInteger(o.highWaterMark, `${name}.highWaterMark`, 1024 * 1024, 0, Number.MAX_SAFE_INTEGER),
    readableHighWaterMark: optionalInteger(
      o.readableHighWaterMark,
      `${name}.readableHighWaterMark`,
      1024 * 1024,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
  }
}

/** A batch the addon handed over, delivered message by message. */
/**
 * A batch as the addon hands it over: Node buffers holding the payloads (small ones
 * packed into slabs of at most 8 KiB, larger ones alone) and a table.
 */
/** Set in a table's fd-count word on the first message of each buffer. */
const STARTS_BUFFER = 0x8000_0000

interface Batch {
  /** The buffers, in order; `data[buffer]` holds the next message. */
  data: Buffer[]
  /**
   * `[cursor, (length, fd count) per message, every descriptor]`; the fd count has bit 31
   * set on the first message of each buffer. Null for one message without descriptors
   * that fills its buffer.
   */
  words: Uint32Array | null
  count: number
  /** The next message to emit. */
  next: number
  /** The buffer the next message is in (-1 before the first). */
  buffer: number
  /** Where the next message's payload starts in its buffer. */
  offset: number
  /** Where the next message's descriptors start in `words`. */
  fdAt: number
}

export interface Channel {
  on(event: 'message', listener: (message: Message) => void): this
  on(event: 'drain' | 'end' | 'close', listener: () => void): this
  on(event: 'error', listener: (err: SocketpairError) => void): this
  on(event: 'senderror', listener: (err: SocketpairError) => void): this
  once(event: 'message', listener: (message: Message) => void): this
  once(event: 'drain' | 'end' | 'close', listener: () => void): this
  once(event: 'error', listener: (err: SocketpairError) => void): this
  once(event: 'senderror', listener: (err: SocketpairError) => void): this
  off(event: 'message', listener: (message: Message) => void): this
  off(event: 'drain' | 'end' | 'close', listener: () => void): this
  off(event: 'error', listener: (err: SocketpairError) => void): this
  off(event: 'senderror', listener: (err: SocketpairError) => void): this
}

/**
 * One end of a socketpair carrying framed messages with descriptors, on Node's event
 * loop. Shaped like `net.Socket`: `send()` returns `false` under backpressure and
 * `'drain'` follows; `pause()`/`resume()`; `end()` half-closes; `close()` closes now;
 * `ref()`/`unref()`.
 *
 * ```ts
 * const [a, b] = Channel.pair()
 * b.on('message', ({ data, fds }) => { console.log(data.toString(), fds); fds.forEach(fs.closeSync) })
 * a.send('hello', { fds: [fs.openSync('/etc/hostname', 'r')] })
 * ```
 *
 * Events: `'message'` ({@link Message}), `'drain'`, `'end'` (the peer finished
 * sending), `'close'` (always last), `'error'` (with a `code`; `'close'` follows),
 * `'senderror'` (a queued message the kernel refused, when its `send()` had no callback;
 * the channel stays open).
 *
 * Reading follows demand: a channel starts reading when the first `'message'` listener
 * is added (or a `for await` loop starts, or `resume()` is called); until then incoming
 * messages wait in the kernel and the peer feels backpressure. `pause()` stops it again.
 * Nothing is ever dropped for want of a listener: messages that arrive when the last
 * listener has gone wait, with their descriptors, for the next one, and nothing more is
 * read meanwhile (at most one read's worth, about 1 MiB, is held).
 */
export class Channel extends EventEmitter implements AsyncIterable<Message> {
  #fd: number
  #native: NativeChannel | null
  #type: SocketType
  #settings: ChannelSettings
  #flushScheduled = false
  #needDrain = false
  #paused = false
  #iteratorsPaused = 0
  /** Somebody asked for messages (a listener, an iterator, resume()): from then on the channel reads unless paused. */
  #flowing = false
  #reading = false
  #batch: Batch | null = null
  /** The addon holds a batch JS has not finished: call settle() once it is. */
  #settleOwed = false
  #resumeScheduled = false
  /** Sends accepted so far: the next send's sequence number. */
  #sent = 0
  /** Send callbacks waiting, oldest first: [sequence number, callback]. */
  #callbacks: [number, SendCallback][] = []
  /** Why the channel closed, for the error of a later send(). */
  #closedBecause = 'the channel is closed'

  /** Adopts `fd`, a connected Unix socket; use {@link Channel.pair}, {@link Channel.fromFd} or {@link Channel.fromParent}. */
  private constructor(fd: number, settings: ChannelSettings) {
    super()
    loadStateBits()
    this.#settings = settings
    this.#native = new (native().NativeChannel)(fd, settings.maxMessageBytes, this, {
      messages: (data: Buffer | Buffer[], table: Buffer | null, count: number) => this.#onMessages(data, table, count),
      drain: () => this.#onDrain(),
      end: () => this.#onEnd(),
      error: (err: Error) => this.#destroy(err as SocketpairError),
      finish: () => this.#checkDone(),
      refused: (list: Array<number | Error>) => this.#onRefused(list),
      written: (oldest: number) => this.#onWritten(oldest),
    })
    this.#fd = fd
    this.#type = this.#native.kind as SocketType
    super.on('newListener', (event: string | symbol) => {
      // Called before the listener is added: deliver or read on the next tick.
      if (event === 'message') {
        this.#flowing = true
        this.#scheduleResume(false)
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
    const settings = channelSettings(options)
    const [a, b] = socketpair(options.type ?? 'stream')
    let left: Channel
    try {
      left = new Channel(a, settings)
    } catch (err) {
      fs.closeSync(a)
      fs.closeSync(b)
      throw err
    }
    try {
      return [left, new Channel(b, settings)]
    } catch (err) {
      left.close()
      fs.closeSync(b)
      throw err
    }
  }

  /**
   * Adopts an open, connected Unix-domain socket descriptor — inherited from a parent,
   * or received in a message. The channel owns it from now on (it makes it non-blocking
   * and close-on-exec, and closes it on `close()`); do not use or close the number
   * elsewhere (`closeFds` refuses it with `ERR_FD_IN_USE`, and adopting it twice throws
   * `ERR_FD_IN_USE`). If this throws (`ENOTSOCK`, `EBADF`, a socket that is not
   * `AF_UNIX`, …), nothing was closed: the descriptor is still yours.
   *
   * ```ts
   * const ch = Channel.fromFd(3)
   * ```
   */
  static fromFd(fd: number, options: ChannelOptions = {}): Channel {
    checkFd(fd, 'fd')
    return new Channel(fd, channelSettings(options))
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
    const settings = channelSettings(options)
    const value = process.env[CHANNEL_FD_ENV]
    if (value === undefined) {
      throw codedError(
        Error,
        'ERR_NO_PARENT_CHANNEL',
        `this process was not started by socketpair's spawn(): ${CHANNEL_FD_ENV} is not set in its environment`,
      )
    }
    const fd = Number(value)
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(fd) || fd > 2 ** 31 - 1) {
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `${CHANNEL_FD_ENV} must be a descriptor number, got ${JSON.stringify(value)}`)
    }
    const channel = new Channel(fd, settings)
    delete process.env[CHANNEL_FD_ENV]
    return channel
  }

  /** `'stream'`, `'seqpacket'` or `'dgram'`. */
  /** The socket's descriptor (owned by the channel; -1 once closed). */
  get fd(): number {
    return this.#fd
  }

  get type(): SocketType {
    return this.#type
  }

  /** True once `close()` ran or the channel failed. */
  get closed(): boolean {
    return this.#native === null
  }

  /** Bytes queued by `send()` and not yet written. */
  get bufferedBytes(): number {
    return this.#native?.queuedBytes ?? 0
  }

  /**
   * Sends one message, with descriptors. Returns `false` when the queue has reached
   * `highWaterMark` bytes or holds 1024 descriptors: wait for `'drain'` before sending
   * more. Messages arrive whole, in order, each with exactly its descriptors.
   *
   * The caller keeps its descriptors and may close them as soon as `send()` returns (a
   * queued message holds duplicates); likewise it may reuse `data`'s memory at once (a
   * queued message holds a copy; unlike `net.Socket#write`, nothing keeps a reference).
   * Everything that can be checked is checked here and thrown, with nothing queued:
   * bad arguments, a message too large (for a record channel: larger than the socket
   * carries), too many descriptors, sending after `end()` (`ERR_STREAM_WRITE_AFTER_END`),
   * after the peer ended (`ERR_CHANNEL_ENDED_BY_PEER`) or after `close()`
   * (`ERR_CHANNEL_CLOSED`). A broken connection (`EPIPE`) is an `'error'` event, then
   * `'close'`. A queued message the kernel refuses later (`EINVAL`: a descriptor it will
   * not pass, such as an io_uring instance) fails alone: `callback(err)` if given,
   * otherwise a `'senderror'` event (a process warning if nobody listens); the messages
   * around it are delivered and the channel stays open.
   *
   * ```ts
   * if (!channel.send(chunk)) await once(channel, 'drain')
   * channel.send('a socket for you', { fds: [socket] }, (err) => { if (err) console.error(err) })
   * ```
   */
  send(data: Uint8Array | string, callback?: SendCallback): boolean
  send(data: Uint8Array | string, options?: SendOptions, callback?: SendCallback): boolean
  send(data: Uint8Array | string, optionsOrCallback?: SendOptions | SendCallback, maybeCallback?: SendCallback): boolean {
    let options: unknown = optionsOrCallback
    let callback: unknown = maybeCallback
    if (typeof optionsOrCallback === 'function') {
      options = {}
      callback = optionsOrCallback
    }
    const nat = this.#native
    if (nat === null) {
      throw codedError(Error, 'ERR_CHANNEL_CLOSED', `cannot send: ${this.#closedBecause}`)
    }
    let bytes: Buffer
    let fds: number[]
    try {
      bytes = toBuffer(data)
      if (options === undefined) options = {}
      checkObject(options, 'options')
      fds = resolvePassables((options as SendOptions).fds)
    } catch (err) {
      throw withCode(err, 'the arguments')
    }
    if (callback !== undefined && typeof callback !== 'function') {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `callback must be a function, got ${describe(callback)}`)
    }
    let queued: number
    try {
      queued = nat.send(bytes, fds)
    } catch (err) {
      const code = (err as SocketpairError).code
      if (!FATAL_SEND_CODES.has(code)) throw err
      this.#destroy(err as SocketpairError)
      return false
    }
    const id = this.#sent++
    if (callback !== undefined) {
      this.#callbacks.push([id, callback as SendCallback])
      if (this.#callbacks.length === 1) nat.notifyWritten(true)
      if (queued === 0) process.nextTick(() => this.#onWritten(this.#native?.oldestUnwritten ?? id + 1))
    }
    // Negative: the queue went out during this send; the flush reports what it wrote.
    if (queued !== 0) this.#scheduleFlush()
    const overWater = queued >= this.#settings.highWaterMark || (fds.length > 0 && nat.queuedFds >= FDS_HIGH_WATER)
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
    this.#end(false)
  }

  #end(byPeer: boolean): void {
    const nat = this.#native
    if (nat === null || (nat.state & STATE_WRITE_ENDING) !== 0) return
    try {
      nat.end(byPeer)
    } catch (err) {
      this.#destroy(err as SocketpairError)
      return
    }
    this.#afterFlush(nat)
    this.#checkDone()
  }

  /**
   * Closes now. What `send()` queued is written if the socket takes it at once, and a
   * message already partly written is finished in the background (the peer never sees
   * half a frame); messages not yet begun are dropped (use `end()` to be sure everything
   * is delivered). Every descriptor the channel holds is closed — those of messages
   * received but not yet delivered too — and nothing more is received. `'close'` follows.
   */
  close(): void {
    if (this.#release('the channel is closed')) process.nextTick(() => this.emit('close'))
  }

  /** Closes the native side once; false if it was closed already. */
  #release(reason: string): boolean {
    const nat = this.#native
    if (nat === null) return false
    this.#closedBecause = reason
    this.#native = null
    this.#batch = null
    this.#settleOwed = false
    // Closing writes what the socket takes and finishes a message already begun: the
    // callbacks of those succeed, the others fail.
    const written = nat.close()
    this.#fd = -1
    this.#failCallbacks(written < 0 ? 0 : written)
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

  /**
   * Stops emitting `'message'` and stops reading: what has been read waits (descriptors
   * included), the rest stays in the kernel and the peer feels backpressure. Works from
   * inside a `'message'` listener: the messages after it wait too.
   */
  pause(): this {
    this.#paused = true
    this.#updateReading()
    return this
  }

  /** Undoes {@link pause}: the waiting messages are emitted (on the next tick), then reading resumes. */
  resume(): this {
    this.#paused = false
    this.#flowing = true
    this.#scheduleResume(false)
    return this
  }

  /** Whether {@link pause} is in effect (`false` for a new channel). */
  isPaused(): boolean {
    return this.#paused
  }

  /** Who created the other end (see {@link peerCredentials}). */
  peerCredentials(): Credentials {
    const nat = this.#native
    if (nat === null) throw codedError(Error, 'ERR_CHANNEL_CLOSED', this.#closedBecause)
    const c = nat.peerCredentials()
    return { pid: c.pid ?? null, uid: c.uid, gid: c.gid }
  }

  /** `for await (const message of channel)`: {@link iterator} with the channel's `readableHighWaterMark`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this.iterator()
  }

  /**
   * Every message until the peer ends or the channel closes; an error is thrown from the
   * loop. Reading pauses while more than `highWaterMark` bytes wait to be consumed.
   * Leaving the loop early (`break`) stops listening; messages received but not yet
   * yielded have their descriptors closed. The channel itself stays open.
   *
   * ```ts
   * for await (const { data, fds } of channel.iterator({ highWaterMark: 4 << 20 })) use(data, fds)
   * ```
   */
  iterator(options: IteratorOptions = {}): AsyncIterableIterator<Message> {
    checkObject(options, 'options')
    const highWaterMark = optionalInteger(
      options.highWaterMark,
      'options.highWaterMark',
      this.#settings.readableHighWaterMark,
      0,
      Number.MAX_SAFE_INTEGER,
    )
    const queue: Message[] = []
    const shared = new WeakSet<Message>()
    let bytes = 0
    let waiting: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void } | null = null
    let failure: unknown = null
    // Closed, or the peer's end already delivered: nothing more will come.
    const nat = this.#native
    let done = nat === null || (nat.state & STATE_READ_ENDED) !== 0
    let paused = false
    const setPaused = (on: boolean): void => {
      if (paused === on) return
      paused = on
      this.#iteratorsPaused += on ? 1 : -1
      if (on) this.#updateReading()
      else this.#scheduleResume(false)
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
        return
      }
      queue.push(m)
      // Another listener got the same descriptor numbers: not ours alone to close.
      if (this.listenerCount('message') > 1) shared.add(m)
      bytes += m.data.length
      if (bytes >= highWaterMark) setPaused(true)
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
    if (!done) {
      this.on('message', onMessage)
      this.on('end', onEnd)
      this.on('close', onEnd)
      this.on('error', onError)
    }
    const iterator: AsyncIterableIterator<Message> = {
      next: (): Promise<IteratorResult<Message>> => {
        const m = queue.shift()
        if (m !== undefined) {
          bytes -= m.data.length
          if (bytes < highWaterMark || queue.length === 0) setPaused(false)
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
        for (const m of queue.splice(0)) if (!shared.has(m)) closeQuietly(m.fds)
        bytes = 0
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }

  /** Whether messages may be emitted now. */
  #deliverable(): boolean {
    return !this.#paused && this.#iteratorsPaused === 0 && this.listenerCount('message') > 0
  }

  /**
   * Reads once flowing and unless paused. With no listener at the moment, one batch is
   * read and held (the addon reads nothing more while a batch is unfinished), so the
   * end of stream is still noticed when nothing is left to deliver.
   */
  #updateReading(): void {
    const nat = this.#native
    if (nat === null) return
    const on = this.#flowing && !this.#paused && this.#iteratorsPaused === 0
    if (on === this.#reading) return
    this.#reading = on
    try {
      nat.setReading(on)
    } catch (err) {
      this.#destroy(err as SocketpairError)
    }
  }

  /** The addon hands over a batch; returns true once every message of it was emitted. */
  #onMessages(data: Buffer | Buffer[], table: Buffer | null, count: number): boolean {
    let done: boolean
    try {
      if (table === null && this.#deliverable()) {
        // One message without descriptors, the request/response case: no batch to keep.
        this.emit('message', { data: data as Buffer, fds: [] })
        return true
      }
      const words = table === null ? null : new Uint32Array(table.buffer, table.byteOffset, table.byteLength >>> 2)
      const buffers = Array.isArray(data) ? data : [data]
      this.#batch = { data: buffers, words, count, next: 0, buffer: -1, offset: 0, fdAt: 1 + 2 * count }
      done = this.#deliverBatch()
    } catch (err) {
      // A listener threw: the exception goes on ('uncaughtException', as any listener's
      // from the loop). The addon saw no `true` and waits for settle(): the rest of the
      // batch is delivered on a later turn, then settle() is called.
      this.#settleOwed = true
      this.#scheduleResume(true)
      throw err
    }
    if (!done) this.#settleOwed = true
    return done
  }

  /** Emits the batch's messages while they can be; true once none is left. */
  #deliverBatch(): boolean {
    const b = this.#batch
    if (b === null) return true
    while (b.next < b.count) {
      if (this.#native === null) break // closed by a listener: the addon closes the rest's descriptors
      if (!this.#deliverable()) return false
      const i = b.next
      let data: Buffer
      let fds: number[] = []
      const words = b.words
      if (words === null) {
        data = b.data[0]!
      } else {
        const length = words[1 + 2 * i]!
        const word = words[2 + 2 * i]!
        if (word & STARTS_BUFFER) {
          b.buffer++
          b.offset = 0
        }
        const nfds = word & ~STARTS_BUFFER
        if (nfds > 0) {
          fds = new Array<number>(nfds)
          for (let k = 0; k < nfds; k++) fds[k] = words[b.fdAt + k]!
          b.fdAt += nfds
        }
        const buffer = b.data[b.buffer]!
        data = b.offset === 0 && length === buffer.length ? buffer : buffer.subarray(b.offset, b.offset + length)
        b.offset += length
      }
      b.next = i + 1
      // Taken from here on: its descriptors are the listener's.
      if (words !== null) words[0] = b.next
      this.emit('message', { data, fds })
    }
    this.#batch = null
    return true
  }

  #scheduleResume(afterThrow: boolean): void {
    if (this.#resumeScheduled || this.#native === null) return
    this.#resumeScheduled = true
    // After a throw, a macrotask: the tick queue may not run again before the loop
    // blocks, and the rest of the batch must not wait for an unrelated event.
    if (afterThrow) setImmediate(() => this.#resumeDelivery())
    else process.nextTick(() => this.#resumeDelivery())
  }

  /** Goes on with a batch that was interrupted, then reading. */
  #resumeDelivery(): void {
    this.#resumeScheduled = false
    const nat = this.#native
    if (nat === null) return
    if (this.#batch !== null) {
      let done: boolean
      try {
        done = this.#deliverBatch()
      } catch (err) {
        this.#scheduleResume(true)
        throw err
      }
      if (!done) return
    }
    if (this.#settleOwed && this.#native !== null) {
      this.#settleOwed = false
      let ended: boolean
      try {
        ended = nat.settle()
      } catch (err) {
        this.#destroy(err as SocketpairError)
        return
      }
      if (ended) this.#onEnd()
    }
    this.#updateReading()
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
    // Negative: refused messages to report, or the sending side just finished.
    const more = left < 0
    if (more) {
      this.#afterFlush(nat)
      left = nat.queuedBytes
    } else if (this.#callbacks.length > 0) {
      this.#onWritten(nat.oldestUnwritten)
    }
    if (left === 0) this.#onDrain()
    if (more) this.#checkDone()
  }

  /** Reports what a flush from JS found: refused messages, and written ones' callbacks. */
  #afterFlush(nat: NativeChannel): void {
    if (nat.hasRefused) this.#onRefused(nat.takeRefused())
    if (this.#callbacks.length > 0) this.#onWritten(nat.oldestUnwritten)
  }

  #onDrain(): void {
    if (this.#needDrain) {
      this.#needDrain = false
      this.emit('drain')
    }
  }

  #onEnd(): void {
    try {
      this.emit('end')
    } finally {
      // Even when an 'end' listener threw: the channel must still end and close.
      if (!this.#settings.allowHalfOpen) {
        // On a later turn, so that a reply sent right after the 'end' (or after a `for
        // await` loop that 'end' finished) still goes out before our end.
        setImmediate(() => this.#end(true))
      }
      this.#checkDone()
    }
  }

  /** Closes once both halves have ended. */
  #checkDone(): void {
    const nat = this.#native
    if (nat === null) return
    const both = STATE_READ_ENDED | STATE_WRITE_ENDED
    if ((nat.state & both) === both) this.close()
  }

  /** Closes because of `err`: 'error', then 'close', as net.Socket does. */
  #destroy(err: SocketpairError): void {
    if (!this.#release(`the channel failed (${err.code})`)) return
    process.nextTick(() => {
      try {
        this.emit('error', err)
      } finally {
        this.emit('close') // 'close' comes last even when an 'error' listener threw
      }
    })
  }

  /**
   * The kernel refused queued messages (`[id, error, id, error, …]`): each one's callback
   * gets its error, or 'senderror' is emitted, or a process warning. Every refused
   * message leaves the callback list before any of this runs, so nothing a listener does
   * (closing the channel, sending) can report one of them as written.
   */
  #onRefused(list: ReadonlyArray<number | Error>): void {
    const reports: [SendCallback | null, SocketpairError][] = []
    for (let i = 0; i + 1 < list.length; i += 2) {
      const id = list[i] as number
      const err = list[i + 1] as SocketpairError
      const at = this.#callbacks.findIndex(([n]) => n === id)
      const callback = at >= 0 ? this.#callbacks.splice(at, 1)[0]![1] : null
      reports.push([callback, err])
    }
    if (this.#callbacks.length === 0) this.#native?.notifyWritten(false)
    // Each on its own tick: a listener that throws does not keep the others from theirs.
    for (const [callback, err] of reports) {
      if (callback !== null) process.nextTick(callback, err)
      else
        process.nextTick(() => {
          if (this.listenerCount('senderror') > 0) this.emit('senderror', err)
          else process.emitWarning(err)
        })
    }
  }

  /** Every message numbered below `oldest` has been written: call their callbacks. */
  #onWritten(oldest: number): void {
    let n = 0
    while (n < this.#callbacks.length && this.#callbacks[n]![0] < oldest) n++
    if (n === 0) return
    for (const [, callback] of this.#callbacks.splice(0, n)) process.nextTick(callback)
    if (this.#callbacks.length === 0) this.#native?.notifyWritten(false)
  }

  /** On close: callbacks of written messages succeed, the others fail. */
  #failCallbacks(oldest: number): void {
    const waiting = this.#callbacks.splice(0)
    for (const [id, callback] of waiting) {
      if (id < oldest) process.nextTick(callback)
      else process.nextTick(callback, codedError(Error, 'ERR_CHANNEL_CLOSED', `the message was not sent: ${this.#closedBecause}`))
    }
  }
}

/**
 * Starts `command` with a dedicated channel: one fresh socketpair per child, the child's
 * end at descriptor `stdio.length` (3 unless you pass more stdio entries), named in the
 * child's environment as `SOCKETPAIR_FD`. The parent's copy of the child's end is closed
 * at once, and the parent's end is close-on-exec, so no other child ever inherits it.
 * Every argument and option is checked before anything is created.
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
  channelSettings(channelOptions, 'options.channel')
  checkSocketType(type, 'options.type')
  const stdio = normalizeStdio(spawnOptions.stdio)
  const [mine, theirs] = socketpair(type)
  const index = stdio.length
  stdio.push(theirs)
  const env = { ...(spawnOptions.env ?? process.env), [CHANNEL_FD_ENV]: String(index) }
  let child: childProcess.ChildProcess
  let channel: Channel
  try {
    channel = Channel.fromFd(mine, channelOptions)
  } catch (err) {
    fs.closeSync(mine)
    fs.closeSync(theirs)
    throw err
  }
  try {
    child = childProcess.spawn(command, args, { ...spawnOptions, stdio, env })
  } catch (err) {
    channel.close()
    throw err
  } finally {
    fs.closeSync(theirs) // the child has its copy (or failed to start)
  }
  return { child, channel }
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
  _handle?: { fd?: unknown } | null
}

/**
 * The descriptor numbers behind what a caller wants to pass: each element read once
 * (a snapshot: a getter cannot show one value to the check and another to the send),
 * every value checked.
 */
function resolvePassables(fds: unknown): number[] {
  if (fds === undefined) return []
  if (!Array.isArray(fds)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `options.fds must be an array, got ${describe(fds)}`)
  }
  const length = fds.length
  const out: number[] = new Array<number>(length)
  for (let i = 0; i < length; i++) {
    if (!(i in fds)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `options.fds[${i}] is missing (a hole in the array)`)
    }
    const item = fds[i] as unknown
    // The common case, a valid descriptor number, without building the element's name.
    out[i] = typeof item === 'number' && Number.isInteger(item) && item >= 0 && item <= 0x7fffffff ? item : resolvePassable(item, `options.fds[${i}]`)
  }
  return out
}

function resolvePassable(item: unknown, name: string): number {
  if (typeof item === 'number') {
    checkFd(item, name)
    return item
  }
  if (item instanceof Channel) {
    const fd = item.fd
    if (fd < 0) throw codedError(Error, 'ERR_CHANNEL_CLOSED', `${name} is a closed Channel`)
    return fd
  }
  if (item instanceof net.Socket || item instanceof net.Server) {
    const fd = (item as unknown as HasHandle)._handle?.fd
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd > 2 ** 31 - 1) {
      throw codedError(
        TypeError,
        'ERR_INVALID_ARG_VALUE',
        `${name} has no descriptor: pass a connected net.Socket or a listening net.Server`,
      )
    }
    return fd
  }
  if (item !== null && typeof item === 'object' && 'fd' in item) {
    const fd: unknown = (item as { fd: unknown }).fd // fs.promises.FileHandle
    if (fd === -1) throw codedError(Error, 'ERR_INVALID_ARG_VALUE', `${name} is a closed FileHandle`)
    checkFd(fd, `${name}.fd`)
    return fd
  }
  throw codedError(
    TypeError,
    'ERR_INVALID_ARG_TYPE',
    `${name} must be a descriptor number, FileHandle, net.Socket, net.Server or Channel, got ${describe(item)}`,
  )
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

/**
 * Runs an argument check; an error without a code (a revoked Proxy, a getter that throws)
 * becomes `ERR_INVALID_ARG_VALUE`, so every error from this package has one.
 */
function withCodes<T>(what: string, check: () => T): T {
  try {
    return check()
  } catch (err) {
    throw withCode(err, what)
  }
}

/** `err` if it has a code; otherwise an `ERR_INVALID_ARG_VALUE` that says what could not be read. */
function withCode(err: unknown, what: string): unknown {
  if (err !== null && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string') return err
  const message = err instanceof Error ? err.message : String(err)
  return codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `${what} cannot be read: ${message}`)
}

function isDetached(buffer: ArrayBufferLike): boolean {
  const flag = (buffer as { detached?: unknown }).detached
  if (typeof flag === 'boolean') return flag
  try {
    new Uint8Array(buffer) // throws for a detached buffer where `detached` is missing
    return false
  } catch {
    return true
  }
}

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

function checkSocketType(type: unknown, name: string): asserts type is SocketType {
  if (type !== 'stream' && type !== 'seqpacket' && type !== 'dgram') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `${name} must be 'stream', 'seqpacket' or 'dgram', got ${describe(type)}`)
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
  if (data instanceof Uint8Array) {
    // A view of a transferred (detached) ArrayBuffer has no memory left to send.
    if (data.byteLength === 0 && isDetached(data.buffer)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', 'data is a view of a detached ArrayBuffer (it was transferred)')
    }
    if (Buffer.isBuffer(data)) return data
    try {
      return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    } catch (err) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `data cannot be read: ${(err as Error).message}`)
    }
  }
  throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `data must be a string, Buffer or Uint8Array, got ${describe(data)}`)
}
