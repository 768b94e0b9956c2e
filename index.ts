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

import * as native from './binding'

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
  | 'ERR_UNSUPPORTED_PLATFORM'

/** An error from this package: always has a `code`. */
export interface SocketpairError extends Error {
  code: SocketpairErrorCode | (string & {})
}

/** The most descriptors one message can carry (Linux's SCM_MAX_FD, 253, on every platform). */
export const MAX_FDS_PER_MESSAGE: number = native.maxFdsPerMessage()

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
  const [a, b] = native.socketpair(type, cloexec, nonblock)
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
  return native.sendmsg(fd, bytes, fds.slice())
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
  const r = native.recvmsg(fd, target, maxFds)
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
  const c = native.peerCredentials(fd)
  return { pid: c.pid ?? null, uid: c.uid, gid: c.gid }
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
